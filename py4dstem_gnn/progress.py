"""Progress bars that behave in terminals, scripts and notebooks.

:func:`tqdm` is the one progress bar of the package. In a Jupyter kernel with
ipywidgets installed it is the widget bar of ``tqdm.notebook``; everywhere else --
terminals, scripts, and notebooks *without* ipywidgets -- it is the plain text bar of
``tqdm.std``. ``tqdm.auto`` makes the same choice but, without ipywidgets, warns
"IProgress not found" on every import; here the fallback is quiet.

:func:`quiet_py4dstem` switches off the progress bars that py4DSTEM (through
emdfile's ``tqdmnd``) shows while reading and saving files, for the command line's
``--no-progress`` / ``--quiet``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
import sys
from typing import Any, Iterator

__all__ = ["tqdm", "progress_class", "in_notebook", "quiet_py4dstem"]


def in_notebook() -> bool:
    """True inside a Jupyter kernel that renders widgets (notebook, lab, VS Code, Colab).

    Qt consoles, Spyder, plain IPython and ``jupyter console`` count as terminals.
    """
    if "ipykernel.zmqshell" not in sys.modules:
        return False
    if any(k == "QT_API" or k.startswith("SPYDER") for k in os.environ):
        return False
    try:
        shell = sys.modules["IPython"].get_ipython()
    except Exception:  # noqa: BLE001 - any failure means: not a notebook
        return False
    if shell is None:
        return False
    name = type(shell).__name__.lower()
    return "qt" not in name and "spyder" not in name


@functools.lru_cache(maxsize=None)
def _widget_bar_available() -> bool:
    """Whether ``tqdm.notebook`` can draw its widget (ipywidgets importable)."""
    return importlib.util.find_spec("ipywidgets") is not None


def progress_class() -> type:
    """The tqdm class for the current front end (widget bar in notebooks with ipywidgets, else text)."""
    if in_notebook() and _widget_bar_available():
        try:
            from tqdm.notebook import tqdm as notebook_tqdm

            return notebook_tqdm
        except ImportError:  # pragma: no cover - broken ipywidgets install
            pass
    from tqdm.std import tqdm as std_tqdm

    return std_tqdm


def tqdm(*args: Any, **kwargs: Any) -> Any:
    """A progress bar: ``tqdm(iterable, desc=..., total=..., disable=...)``, as :class:`tqdm.tqdm`.

    Chooses the widget bar in notebooks with ipywidgets and the text bar elsewhere
    (see :func:`progress_class`), without warnings. Usable as an iterator and as a
    context manager. In a notebook without ipywidgets the text bar is kept when done
    (``leave=True``): a cleared text bar leaves an empty stderr block in the cell.
    """
    cls = progress_class()
    if cls.__module__ == "tqdm.std" and in_notebook():
        kwargs["leave"] = True
    return cls(*args, **kwargs)


@contextlib.contextmanager
def quiet_py4dstem(enabled: bool = True) -> Iterator[None]:
    """Silence py4DSTEM's and emdfile's progress bars (reading and saving files) inside the block.

    Parameters
    ----------
    enabled : bool
        ``False`` makes the context manager a no-op (handy for ``with quiet_py4dstem(not progress):``).

    Notes
    -----
    py4DSTEM draws its bars with ``emdfile.tqdmnd``, which looks up ``tqdm`` in its
    module at each call; that name is replaced by a disabled bar for the duration of
    the block and restored afterwards. Where emdfile is missing or changes this, the
    block runs unchanged.
    """
    if not enabled:
        yield
        return
    try:
        # the module, not the function of the same name that emdfile's __init__ exports
        tqdmnd_module = importlib.import_module("emdfile.tqdmnd")
    except ImportError:  # pragma: no cover - emdfile is a dependency
        yield
        return
    original = getattr(tqdmnd_module, "tqdm", None)
    if original is None:  # pragma: no cover - emdfile changed
        yield
        return

    def disabled(*args: Any, **kwargs: Any) -> Any:
        kwargs["disable"] = True
        return original(*args, **kwargs)

    tqdmnd_module.tqdm = disabled
    try:
        yield
    finally:
        tqdmnd_module.tqdm = original
