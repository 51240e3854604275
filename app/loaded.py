"""Models loaded for Chat, Classify and Compare, kept while their folder is unchanged (a small LRU)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from tunelab.errors import TuneLabError
from tunelab.infer import Classifier, Generator

from .state import AppState, UserError, clean_message

_MAX_LOADED = 3
_cache: OrderedDict[tuple, Any] = OrderedDict()
_lock = threading.Lock()


def model_spec(state: AppState, run_id: str | None, model_path: str | None) -> str:
    """A run of this app or one of its exports (by name) or, when given, a model folder / Hub id typed
    by the user."""
    typed = (model_path or "").strip()
    if typed:
        return state.allowed_model(typed)
    return str(state.model_dir(run_id))


def _stamp(spec: str) -> float:
    path = Path(spec) / "config.json"
    return path.stat().st_mtime if path.exists() else 0.0


def load(kind: type[Classifier] | type[Generator], spec: str):
    key = (kind.__name__, spec, _stamp(spec))
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    try:
        model = kind.load(spec)
    except TuneLabError as e:
        raise UserError(clean_message(str(e))) from None
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"Cannot load that model: {clean_message(str(e).splitlines()[0])}") from None
    with _lock:
        _cache[key] = model
        while len(_cache) > _MAX_LOADED:
            _cache.popitem(last=False)
    return model
