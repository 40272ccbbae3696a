"""The committed outputs come from full runs on the CPU, so they print the book's numbers (REFERENCE_VALUES.md).

nbval reruns the notebooks in their quick configuration, where these long cells train tiny models; this file
reads the stored outputs instead (json only, no kernel). It fails when a rebuild on a GPU, or in the quick
configuration, replaces them: rebuild in full on a CPU, or keep the book's values beside yours in the prose.
"""

from __future__ import annotations

import pytest

from notebook_conventions import REPO_ROOT, cell_source, load_notebook


def _joined(text) -> str:
    return "".join(text) if isinstance(text, list) else text


def stored_text(path: str, needle: str) -> str:
    """The printed output (streams, and the text form of a displayed value such as a table) of the one code cell
    of ``path`` whose source contains ``needle``."""
    cells = [c for c in load_notebook(REPO_ROOT / path)["cells"]
             if c["cell_type"] == "code" and needle in cell_source(c)]
    assert len(cells) == 1, f"{path}: {len(cells)} code cells contain {needle!r}"
    return "".join(_joined(o["text"]) if o.get("output_type") == "stream" else _joined(o["data"]["text/plain"])
                   for o in cells[0].get("outputs", [])
                   if o.get("output_type") == "stream" or "text/plain" in o.get("data", {}))


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


CH06 = "ch06_finetune_classification/ch06_finetune_classification.ipynb"
CH06_EXERCISES = "ch06_finetune_classification/exercises.ipynb"
CH06_LORA = "ch06_finetune_classification/appendix_e_lora.ipynb"


def markdown_text(path: str, needle: str) -> str:
    """The source of the one markdown cell of ``path`` that contains ``needle``."""
    cells = [cell_source(c) for c in load_notebook(REPO_ROOT / path)["cells"]
             if c["cell_type"] == "markdown" and needle in cell_source(c)]
    assert len(cells) == 1, f"{path}: {len(cells)} markdown cells contain {needle!r}"
    return cells[0]


def test_ch06_training_is_the_full_run():
    """All 130 batches of each of the 5 epochs, one accuracy line per epoch (the quick run trains 1 epoch)."""
    log = stored_text(CH06, "batches per epoch")
    assert "130 batches per epoch, 5 epoch(s)" in log, "rebuild ch06 in full"
    assert log.count("Training accuracy:") == 5 and "Ep 5 (Step 000600)" in log


def test_ch06_exercises_are_full_runs():
    """The reference and the three exercises each train 5 epochs and measure the whole sets."""
    cells = [c for c in load_notebook(REPO_ROOT / CH06_EXERCISES)["cells"]
             if c["cell_type"] == "code" and "run_experiment(" in cell_source(c) and "def " not in cell_source(c)]
    logs = ["".join("".join(o["text"]) for o in c.get("outputs", []) if o.get("output_type") == "stream")
            for c in cells]
    assert len(logs) == 4
    assert all(log.count("Training accuracy:") == 5 and "Accuracy on the whole sets" in log for log in logs)


@pytest.mark.parametrize(("path", "needle", "quoted", "output_path", "output_needle", "printed"), [
    (CH06_LORA, "O que esses números mostram", "87,67%", CH06_LORA, "BOOK_ACCURACY =", "87.67"),
    (CH06_LORA, "O que esses números mostram", "95,67%", CH06_EXERCISES, "'vs capítulo'", "95.67%"),
    (CH06_LORA, "O que esses números mostram", "89,67%", CH06_EXERCISES, "'vs capítulo'", "89.67%"),
    (CH06_EXERCISES, "tanto quanto o GPT-2 ajustado", "95,67%", CH06_EXERCISES, "'vs capítulo'", "95.67%"),
])
def test_ch06_prose_quotes_the_stored_run(path, needle, quoted, output_path, output_needle, printed):
    """Figures the prose gives for "this run" are the ones its stored outputs print."""
    assert quoted in markdown_text(path, needle)
    assert printed in stored_text(output_path, output_needle)


CH07 = "ch07_finetune_instructions/ch07_finetune_instructions.ipynb"
CH07_EXERCISES = "ch07_finetune_instructions/exercises.ipynb"


def test_ch07_training_is_the_full_run():
    """All 116 batches of the 935 training entries, each epoch (the quick run trains 5 batches of 40 entries)."""
    log = stored_text(CH07, "batches per epoch")
    assert "116 batches per epoch" in log, "rebuild ch07 in full"
    assert "Ep 1 (Step 000000)" in log and "Training completed in" in log


def test_ch07_responses_cover_the_whole_test_set():
    assert "110 responses in" in stored_text(CH07, "responses = instruction_responses(model, tokenizer, test_entries"), \
        "rebuild ch07 in full"


def test_ch07_exercises_are_full_runs():
    """The reference and the exercises 7.1, 7.2 and 7.4 each train on all 935 entries and answer all 110."""
    cells = [c for c in load_notebook(REPO_ROOT / CH07_EXERCISES)["cells"]
             if c["cell_type"] == "code" and "finetune_and_evaluate(" in cell_source(c)
             and "def " not in cell_source(c)]
    logs = ["".join("".join(o["text"]) for o in c.get("outputs", []) if o.get("output_type") == "stream")
            for c in cells]
    trained = [log for log in logs if "batches per epoch" in log]
    assert len(trained) >= 4, "rebuild the ch07 exercises in full"
    assert all("116 batches per epoch" in log and "ROUGE-L" in log for log in trained)
    assert "110 test entries" in stored_text(CH07_EXERCISES, "for name, result in results.items():\n    judge")
