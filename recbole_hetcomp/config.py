"""``Config``: RecBole's configurator with our ``properties/`` yaml files laid over its defaults.

Precedence, lowest first:
RecBole's overall / model / dataset yaml  <  our ``properties/overall.yaml``  <
our ``properties/model/<Model>.yaml``  <  our ``properties/dataset/<dataset>.yaml``  <
config files  <  config dict  <  command-line ``--key=value``.

Unlike RecBole's own ``Config``, command-line arguments are read only from the
``cmd_args`` list given to the constructor, never from ``sys.argv`` behind the
caller's back (so library use and tests see exactly what they pass).
"""

from recbole.config import Config as RecBoleConfig

from recbole_hetcomp.utils import get_model, properties_dir


class Config(RecBoleConfig):
    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=None):
        self._cmd_args = list(cmd_args or [])
        super().__init__(model, dataset, config_file_list, config_dict)

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
        for path in (props / "overall.yaml", props / "model" / f"{model}.yaml", props / "dataset" / f"{dataset}.yaml"):
            if path.is_file():
                self._update_internal_config_dict(str(path))
