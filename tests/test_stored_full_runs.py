"""The committed outputs come from full runs on the CPU, so they print the book's numbers (REFERENCE_VALUES.md).

nbval reruns the notebooks in their quick configuration, where these long cells train tiny models; this file
reads the stored outputs instead (json only, no kernel). It fails when a rebuild on a GPU, or in the quick
configuration, replaces them: rebuild in full on a CPU, or keep the book's values beside yours in the prose.
"""

from __future__ import annotations

import pytest

from notebook_conventions import REPO_ROOT, cell_source, load_notebook


def stored_text(path: str, needle: str) -> str:
    """The stream output of the one code cell of ``path`` whose source contains ``needle``."""
    cells = [c for c in load_notebook(REPO_ROOT / path)["cells"]
             if c["cell_type"] == "code" and needle in cell_source(c)]
    assert len(cells) == 1, f"{path}: {len(cells)} code cells contain {needle!r}"
    return "".join("".join(o["text"]) if isinstance(o["text"], list) else o["text"]
                   for o in cells[0].get("outputs", []) if o.get("output_type") == "stream")


CH05 = "ch05_pretraining/ch05_pretraining.ipynb"


@pytest.mark.parametrize("line", [
    "Ep 1 (Step 000000): Train loss 9.781, Val loss 9.933",
    "Ep 10 (Step 000085): Train loss 0.391, Val loss 6.452",
])
def test_ch05_training_log_is_the_books(line):
    assert line in stored_text(CH05, "train_model_simple("), "rebuild ch05 in full on a CPU"


def test_ch05_greedy_text_after_training_is_the_books():
    """5.3 opens, as the book, with greedy decoding of the trained model."""
    book = ('Every effort moves you know," was one of the axioms he laid down across the Sevres and silver of an '
            "exquisitely appointed lun")
    assert book in stored_text(CH05, "max_new_tokens=25,\n    context_size=GPT_CONFIG_124M")


def test_ch05_exercise_5_4_continues_the_books_run():
    """Exercise 5.4 continues from the chapter's 10-epoch checkpoint: the book's 0.271 / 6.545, then 0.244 / 6.614."""
    log = stored_text("ch05_pretraining/exercises.ipynb", "num_epochs=NUM_EPOCHS_MORE")
    assert "Ep 1 (Step 000000): Train loss 0.271, Val loss 6.545" in log
    assert "Ep 1 (Step 000005): Train loss 0.244, Val loss 6.614" in log
