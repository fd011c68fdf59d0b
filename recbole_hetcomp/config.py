"""``Config``: RecBole's configurator with our ``properties/`` yaml files laid over its defaults.

Precedence, lowest first:
RecBole's overall / model / dataset yaml  <  our ``properties/overall.yaml``  <
our ``properties/model/<Model>.yaml`` (for HetComp with ``student: <Model>``, that model's RecBole and
our yaml first)  <  our ``properties/dataset/<dataset>.yaml`` (its
``<Model>.key`` lines, for that model only, over its plain keys)  <
config files  <  config dict  <  command-line ``--key=value``.

Unlike RecBole's own ``Config``, command-line arguments are read only from the
``cmd_args`` list given to the constructor, never from ``sys.argv`` behind the
caller's back (so library use and tests see exactly what they pass).
"""

from pathlib import Path

import recbole
import yaml
from recbole.config import Config as RecBoleConfig

from recbole_hetcomp.model.hetcomp import student_class
from recbole_hetcomp.registry import get_model
from recbole_hetcomp.schema import check_early
from recbole_hetcomp.settings import properties_dir


class Config(RecBoleConfig):
    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=None):
        self._cmd_args = list(cmd_args or [])
        self._model_arg = model  # RecBole reads the config files before it resolves the model
        super().__init__(model, dataset, config_file_list, config_dict)

    def _user_value(self, key):
        """``key`` as the caller set it (a config file, the config dict or the command line), or None."""
        return self.external_config_dict.get(key)

    def _set_default_parameters(self):
        check_early(self.final_config_dict)  # RecBole's own checks of these are a TypeError or NotImplementedError
        super()._set_default_parameters()

    def _init_device(self):
        """RecBole's device choice, made explicit: RecBole ignores ``device`` and silently uses the CPU when
        there is no CUDA; here ``device: cuda`` (or ``gpu``) or an explicit ``gpu_id`` without CUDA is an error,
        and ``device: cpu`` stays on the CPU even where CUDA is available."""
        import torch

        wanted, gpu_id = self._user_value("device"), self._user_value("gpu_id")
        super()._init_device()
        if wanted is not None:
            text = str(wanted).strip().lower()
            if text == "cpu":
                self.final_config_dict["device"] = torch.device("cpu")
            elif text in ("cuda", "gpu") or text.startswith("cuda:"):
                if not torch.cuda.is_available():
                    raise ValueError(f"device={wanted}: this machine has no CUDA device (torch.cuda.is_available() "
                                     "is False): drop --device to run on the CPU, or run on a machine with a GPU")
            else:
                raise ValueError(f"device={wanted}: must be cpu or cuda")
        elif gpu_id not in (None, "") and not torch.cuda.is_available():
            raise ValueError(f"gpu_id={gpu_id}: this machine has no CUDA device (torch.cuda.is_available() is "
                             "False): drop --gpu_id to run on the CPU, or run on a machine with a GPU")

    def _load_cmd_line(self):
        parsed = {}
        for arg in self._cmd_args:
            body = arg[2:] if arg.startswith("--") else None
            if body is None or body.count("=") != 1 or not body.split("=")[0]:
                raise ValueError(f"bad config argument '{arg}': write it as --key=value")
            key, value = body.split("=")
            if key in parsed and parsed[key] != value:
                raise ValueError(f"config argument --{key} given twice with different values")
            parsed[key] = value
        return self._convert_config_dict(parsed)

    def _load_config_files(self, file_list):
        """RecBole's reading of ``config_files``, with one clear line for a missing file, bad
        YAML or a file that is not a mapping of keys to values."""
        files = []
        for file in file_list or []:
            try:
                with open(file, "r", encoding="utf-8") as f:
                    text = f.read()
            except FileNotFoundError:
                raise ValueError(f"config file {file} does not exist: check the path given to "
                                 "--config_files") from None
            except (OSError, UnicodeDecodeError) as e:
                raise ValueError(f"config file {file} cannot be read ({getattr(e, 'strerror', None) or e}): "
                                 "give a readable UTF-8 yaml file to --config_files") from None
            try:
                loaded = yaml.load(text, Loader=self.yaml_loader)
            except yaml.YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
                problem = getattr(e, "problem", None) or str(e).splitlines()[0]
                raise ValueError(f"config file {file} is not valid YAML{where} ({problem}): "
                                 "fix it, one 'key: value' per line") from None
            if loaded is None:
                continue  # an empty file sets nothing
            if not isinstance(loaded, dict):
                raise ValueError(f"config file {file} holds a {type(loaded).__name__}, not 'key: value' lines: "
                                 "write one 'key: value' per line")
            files.append((file, loaded))
        # <Model>.key lines act as in our own yaml (:func:`model_lines`), over every file's plain key
        merged = {k: v for _, loaded in files for k, v in loaded.items() if not _is_scoped(k)}
        model = self._model_arg if self._model_arg is not None else merged.get("model")
        for file, loaded in files:
            merged.update(model_lines(loaded, getattr(model, "__name__", model), f"config file {file}"))
        return merged

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise KeyError("no model given: pass model=..., or set 'model' in a config file or dict")
        if isinstance(model, str):
            model = get_model(model)
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        props = properties_dir()
        for path in (props / "overall.yaml", *self._student_files(model, props), props / "model" / f"{model}.yaml",
                     props / "dataset" / f"{dataset}.yaml"):
            if path.is_file():
                self._apply_scoped(self._update_internal_config_dict(str(path)) or {}, model, path)

    def _student_files(self, model, props):
        """For HetComp with ``student: <Model>`` (not MF): that model's RecBole defaults and ours, laid under
        HetComp's yaml (so the student keeps HetComp's embedding size, learning rate and batches)."""
        student = self.external_config_dict.get("student")
        if model != "HetComp" or student is None or str(student).upper() == "MF":
            return []
        try:
            student = get_model(student).__name__  # as RecBole spells it (lightgcn -> LightGCN)
        except ValueError:
            pass  # student_class names the problem in one line
        student = student_class(student).__name__  # one line for a model that cannot be a student
        self.external_config_dict["student"] = student
        return [recbole_model_yaml(student), props / "model" / f"{student}.yaml"]

    def _apply_scoped(self, loaded, model, path):
        """A ``<Model>.key: value`` line of our yaml sets ``key`` for that model only, over the file's plain ``key``
        (:func:`model_lines`)."""
        for key in [k for k in loaded if _is_scoped(k)]:
            self.internal_config_dict.pop(key)
        self.internal_config_dict.update(model_lines(loaded, model, f"config file {path}"))


def _is_scoped(key):
    return isinstance(key, str) and "." in key


def model_lines(loaded, model, where):
    """``{key: value}`` of the ``<Model>.key: value`` lines of one yaml mapping (``where``: the file) that reach
    ``model``: a dataset's settings for one model, the yaml form of the command line's ``--<Model>.key=value``.
    The scope is the model being configured (``HetComp`` for the student, whatever its model), case-insensitive;
    a scope that names no model is an error, as on the command line."""
    own = {}
    for key in [k for k in loaded if _is_scoped(k)]:
        scope, name = key.split(".", 1)
        if model is not None and scope.lower() == str(model).lower():
            own[name] = loaded[key]
            continue
        try:
            get_model(scope)
        except ValueError as e:
            raise ValueError(f"{where}, line '{key}': {e}") from None
    return own


def recbole_model_yaml(model):
    """The path of RecBole's own yaml defaults for ``model`` (it may not exist: not every model has one)."""
    return Path(recbole.__file__).parent / "properties" / "model" / f"{model}.yaml"


def make_config(model, dataset, config_files=None, config_dict=None, cmd_args=None):
    """A :class:`Config` for ``model`` on ``dataset``."""
    return Config(model=model, dataset=dataset, config_file_list=config_files or None,
                  config_dict=config_dict or None, cmd_args=cmd_args)


def without_keys(args, keys):
    """The ``--key=value`` ``args`` whose key is not in ``keys``: where the run sets those keys itself (a row's
    overrides, the run's fusion), a command-line value would otherwise win over them (RecBole reads the command
    line last)."""
    return [a for a in args or [] if a[2:].split("=", 1)[0] not in keys]


def scoped_args(cmd_args, model, known):
    """The ``--key=value`` arguments that reach ``model``: the global ones, plus the
    ``--<Model>.key=value`` ones addressed to it (prefix removed); a scoped key overrides the
    same global one (``--epochs=5 --LightGCN.epochs=40``). A scope that names no model of the
    run is an error, so a typo never passes silently.

    In a run with HetComp (``known`` holds it) whose student is another model (``--student LightGCN``, which
    the command line passes as ``--HetComp.student=LightGCN``), ``--LightGCN.key=value`` is addressed to the
    student, as ``--HetComp.key=value`` is; if that model is also a teacher of the run the scope is ambiguous,
    and an error."""
    lowered = {k.lower() for k in known}
    student = _student_of(cmd_args) if "hetcomp" in lowered else None
    plain, scoped = [], []
    for arg in cmd_args or []:
        key = arg[2:].split("=", 1)[0]
        if "." not in key:
            plain.append(arg)
            continue
        scope, name = key.split(".", 1)
        if student is not None and scope.lower() == student.lower():
            if scope.lower() in lowered:
                raise ValueError(f"'{arg}' is ambiguous: {scope} is a teacher of this run and its student "
                                 f"(--student {student}): write --HetComp.{name}=... to set the student, a line "
                                 f"'{scope}.{name}: ...' in a --config_files yaml to set the teacher, or leave "
                                 f"{scope} out of --teachers")
            scope = "HetComp"
        elif scope.lower() not in lowered:  # model names are case-insensitive
            raise ValueError(f"'{arg}' is addressed to '{scope}', which is not a model of this run "
                             f"({', '.join(known)})")
        if scope.lower() == model.lower():
            scoped.append(f"--{name}={arg.split('=', 1)[1]}")
    mine = {a[2:].split("=", 1)[0] for a in scoped}
    return [a for a in plain if a[2:].split("=", 1)[0] not in mine] + scoped


def _student_of(cmd_args):
    """The student's model named on the command line (``--HetComp.student=X`` or ``--student=X``), None for MF or
    none."""
    named = None
    for arg in cmd_args or []:
        key = arg[2:].split("=", 1)[0]
        if key.lower() in ("hetcomp.student", "student") and "=" in arg:
            named = arg.split("=", 1)[1].strip()
    return None if not named or named.upper() == "MF" else named


def split_global_args(cmd_args):
    """The ``--key=value`` arguments that are not addressed to one model."""
    return [a for a in cmd_args or [] if "." not in a[2:].split("=", 1)[0]]
