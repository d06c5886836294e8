"""Import stubs for packages that a peer imports at start-up but the benchmarks never call.

BindsNET 0.3.4 imports torchvision, OpenCV (``cv2``), Gymnasium and ALE
(``ale_py``) when ``bindsnet`` itself is imported, for its data sets and
game environments. PyPI's torchvision does not load beside the CPU build of
torch 2.13, and the other three are large and unused here.
:mod:`benchmarks.envs` copies this file into the BindsNET environment as
``sitecustomize.py``, so Python runs :func:`install` at start-up.

The finder is appended to ``sys.meta_path``, so a real installation of a
stubbed package still wins. A stubbed module returns a placeholder class for
any attribute (so ``class Wrapper(torchvision.datasets.MNIST)`` still
defines a class), and creating an instance of a placeholder raises
``ImportError`` that names the stub.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

STUBBED_PACKAGES = ("torchvision", "cv2", "gymnasium", "ale_py")


class _Unavailable:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise ImportError(
            f"{type(self).__qualname__} belongs to a package replaced by an import stub in this benchmark "
            f"environment ({', '.join(STUBBED_PACKAGES)}); install the real package to use it"
        )


class _PlaceholderType(type):
    """The type of placeholder classes: any attribute is another placeholder class."""

    def __getattr__(cls, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(cls.__module__, f"{cls.__qualname__}.{name}")


def _placeholder(module: str, qualname: str) -> type:
    name = qualname.rsplit(".", 1)[-1]
    return _PlaceholderType(name, (_Unavailable,), {"__module__": module, "__qualname__": qualname})


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(self.__name__, f"{self.__name__}.{name}")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Find the stubbed packages and their submodules when nothing earlier on the path does."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".")[0] not in STUBBED_PACKAGES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _StubModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        module.__path__ = []


def install() -> None:
    """Append the stub finder to ``sys.meta_path`` once."""
    if not any(isinstance(finder, _StubFinder) for finder in sys.meta_path):
        sys.meta_path.append(_StubFinder())


if __name__ == "sitecustomize":
    install()
