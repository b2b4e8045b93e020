"""Import paths of modules that moved into subpackages: `import modeling_plm.trainer` keeps working and gives the
very module `modeling_plm.training.trainer` (one object, so patching either name patches both)."""

import importlib
import importlib.abc
import importlib.machinery
import sys

MOVED = {
    "modeling_plm.collators": "modeling_plm.data.collators",
    "modeling_plm.trainer": "modeling_plm.training.trainer",
    "modeling_plm.finetune": "modeling_plm.training.finetune",
    "modeling_plm.flops": "modeling_plm.training.flops",
    "modeling_plm.presets": "modeling_plm.training.presets",
    "modeling_plm.lora": "modeling_plm.training.lora",
    "modeling_plm.export": "modeling_plm.hub.export",
    "modeling_plm.convert": "modeling_plm.hub.convert",
    "modeling_plm.demo": "modeling_plm.cli.demo",
    "modeling_plm.scaling.cli": "modeling_plm.cli.scaling",
    "modeling_plm.pipelines": "modeling_plm.inference",
    "modeling_plm.pipelines.embedding": "modeling_plm.inference.embedding",
    "modeling_plm.pipelines.generation": "modeling_plm.inference.generation",
    "modeling_plm.pipelines.scoring": "modeling_plm.inference.scoring",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=fullname == "modeling_plm.pipelines")

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module) -> None:
        pass  # already executed under its new name


def install() -> None:
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())  # before the path finders: a stale folder must not shadow it
