"""Loading models for inference from several threads at once (the app's users, a chat and a classify)."""

from __future__ import annotations

import threading

import torch

from tunelab.infer import Classifier


def test_models_loaded_from_several_threads_at_once_leave_torch_as_it_was(tiny_bert):
    """transformers patches torch.nn.init and torch.linspace while it builds a model; concurrent loads
    used to leave those patches in place, so that every later model kept uninitialized weights.
    tiny_bert is a masked LM: its classifier head is new, initialized at each load."""
    initializers = {name: getattr(torch.nn.init, name) for name in ("normal_", "zeros_", "ones_", "uniform_")}
    linspace = torch.linspace
    errors: list[BaseException] = []

    def load_many() -> None:
        try:
            for _ in range(15):
                Classifier.load(tiny_bert)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    threads = [threading.Thread(target=load_many) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads), errors
    assert [n for n, f in initializers.items() if getattr(torch.nn.init, n) is not f] == []
    assert torch.linspace is linspace
