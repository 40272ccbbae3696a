"""The benchmark helpers and scripts: interleaved medians for generation, one named fast path for training.

No timing is asserted: the timer is replaced where a test needs known durations, and the scripts run in tiny sizes.
"""

from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

import pytest
import torch

from benchmark_scripts import BENCHMARKS, load_script
from llmscratch import benchmarking
from llmscratch.gpt import GPT_CONFIG_TINY
from llmscratch.precision import choose_training_precision

CFG = {**GPT_CONFIG_TINY, "context_length": 16}  # the package's tiny GPT, 16 positions
PROMPT, NEW_TOKENS = [1, 2, 3], 5  # 5 new tokens: the warm-up calls generate 2, so timed calls are told apart
COLUMNS = ["implementation", "new_tokens", "repeats", "seconds", "tokens_per_s", "speedup_vs_no_cache",
           "vs_transformers", "same_tokens"]

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# --- compare_generation: interleaved repeats, median -------------------------------------------------------

def record_generation_calls(monkeypatch):
    """Wrap the three generators so that every call is recorded as (variant, max_new_tokens)."""
    calls = []

    def recording(name, generate, n_arg):
        def wrapper(*args, **kwargs):
            calls.append((name, kwargs["max_new_tokens"] if n_arg is None else args[n_arg]))
            return generate(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(benchmarking, "generate_text_simple",
                        recording("no cache", benchmarking.generate_text_simple, 2))
    monkeypatch.setattr(benchmarking, "generate_text_cached",
                        recording("KV cache", benchmarking.generate_text_cached, 2))
    build_hf = benchmarking._transformers_gpt2

    def transformers_gpt2(model, cfg):
        hf = build_hf(model, cfg)
        hf.generate = recording("transformers generate()", hf.generate, None)
        return hf

    monkeypatch.setattr(benchmarking, "_transformers_gpt2", transformers_gpt2)
    return calls


@pytest.mark.parametrize("include_transformers", [False, True])
def test_compare_generation_interleaves_repeats_and_reports_the_median(monkeypatch, include_transformers):
    if include_transformers:
        pytest.importorskip("transformers")
    calls = record_generation_calls(monkeypatch)
    # Known durations instead of the clock: the k-th timed run of a variant takes FAKE[variant][k] seconds.
    fake = {"no cache": [5.0, 1.0, 2.0], "KV cache": [0.1, 0.9, 0.2], "transformers generate()": [0.3, 0.4, 9.0]}
    runs = {name: iter(seconds) for name, seconds in fake.items()}

    def fake_time_call(fn, **kwargs):
        fn()
        return next(runs[calls[-1][0]])

    monkeypatch.setattr(benchmarking, "time_call", fake_time_call)
    table = benchmarking.compare_generation(CFG, prompt=PROMPT, max_new_tokens=NEW_TOKENS, repeats=3,
                                            include_transformers=include_transformers)

    names = ["no cache", "KV cache"] + (["transformers generate()"] if include_transformers else [])
    assert list(table.implementation) == names
    assert list(table.columns) == [c for c in COLUMNS if include_transformers or c != "vs_transformers"]
    assert (table.repeats == 3).all() and (table.new_tokens == NEW_TOKENS).all()
    assert table.same_tokens.all()
    # interleaved: each round runs every variant once, and each round starts at another variant
    timed = [name for name, n in calls if n == NEW_TOKENS]
    rounds = [timed[i:i + len(names)] for i in range(0, len(timed), len(names))]
    assert len(rounds) == 3 and all(sorted(r) == sorted(names) for r in rounds)
    assert len({r[0] for r in rounds}) == min(3, len(names))
    # the median of the three runs, not the first or the mean
    seconds = dict(zip(table.implementation, table.seconds))
    assert seconds == {name: statistics.median(fake[name]) for name in names}
    kv = table[table.implementation == "KV cache"].iloc[0]
    assert kv.speedup_vs_no_cache == pytest.approx(2.0 / 0.2)
    assert kv.tokens_per_s == pytest.approx(NEW_TOKENS / 0.2)
    if include_transformers:
        assert kv.vs_transformers == pytest.approx(0.4 / 0.2)


def test_compare_generation_needs_three_repeats():
    with pytest.raises(ValueError, match="repeats must be at least 3"):
        benchmarking.compare_generation(CFG, prompt=PROMPT, max_new_tokens=NEW_TOKENS, repeats=2,
                                        include_transformers=False)


def test_generation_speed_script(capsys):
    script = load_script("generation_speed")
    script.main(["--model", "tiny", "--max-new-tokens", "3", "--no-transformers", "--threads", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert any("median of 3 interleaved repeats" in line for line in lines)
    assert lines[-2] == "vs transformers: not measured (--no-transformers)"
    assert re.fullmatch(r"speedup: \d+\.\d\dx", lines[-1])


def test_generation_speed_bad_device_is_one_line():
    script = load_script("generation_speed")
    with pytest.raises(SystemExit) as raised:
        script.main(["--device", "tpu", "--model", "tiny"])
    message = str(raised.value.code)
    assert message.startswith("generation_speed.py: error:") and "tpu" in message and "\n" not in message


# --- train_speed.py: the book's path against one named fast path ----------------------------------------

def test_train_speed_learning_check_on_a_tiny_gpt(monkeypatch, capsys):
    script = load_script("train_speed")
    order = []
    train_step = script.train_step

    def recording_step(path, *args):
        order.append(path.name)
        return train_step(path, *args)

    monkeypatch.setattr(script, "train_step", recording_step)
    code = script.main(["--config", "tiny", "--context-length", "16", "--steps", "2", "--warmup", "1",
                        "--fast-path", "eager", "--precision", "fp32", "--threads", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert order == ["book", "eager", "eager", "book", "book", "eager"]  # same batches, alternating who goes first
    diff = float(re.search(r"max \|loss - book's\| = (\S+) \(tolerance 0\.001: fp32, same dropout masks\) OK",
                           out).group(1))
    assert diff < 1e-4  # fp32, the same weights, batches and dropout masks: the paths train alike
    assert re.fullmatch(r"speedup: \d+\.\d\dx \(fast path 'eager' over the book's\)", out.strip().splitlines()[-1])


def test_train_speed_paths_share_weights_and_the_package_loss(monkeypatch):
    script = load_script("train_speed")
    seen = []
    monkeypatch.setattr(script, "calc_loss_batch", lambda x, y, model, device: seen.append(model) or torch.zeros(()))
    args = script.parse_args(["--config", "tiny", "--fast-path", "eager"])
    book, fast = script.build_paths(CFG, args.device, args, choose_training_precision("cpu", "fp32"))
    x = torch.zeros(1, 4, dtype=torch.long)
    book.loss_fn(x, x)
    fast.loss_fn(x, x)
    assert seen == [book.model, fast.model]  # both paths' loss is llmscratch.pretraining.calc_loss_batch
    fast_weights = fast.model.state_dict()
    assert all(torch.equal(w, fast_weights[k]) for k, w in book.model.state_dict().items())  # seed 123, both
    assert (book.name, fast.name, fast.exact) == ("book", "eager", True)


def test_train_speed_learning_check_verdicts():
    script = load_script("train_speed")

    def path(name, losses, exact=True):
        p = script.TrainPath(name, "", None, None, None, exact=exact)
        p.losses = losses
        return p

    book = path("book", [10.0, 9.0, 8.0])
    assert script.learning_check(book, path("eager", [10.0, 9.0, 8.0005]))[0]
    ok, report = script.learning_check(book, path("eager", [10.0, 9.0, 8.01]))
    assert not ok and "MISMATCH" in report and "FAILED" in report
    assert script.learning_check(book, path("compiled", [10.0, 9.0, 8.05], exact=False))[0]  # mixed precision: looser
    assert not script.learning_check(book, path("compiled", [10.0, float("nan"), 8.0], exact=False))[0]


def test_train_speed_bad_device_is_one_line():
    script = load_script("train_speed")
    with pytest.raises(SystemExit) as raised:
        script.parse_args(["--device", "tpu"])
    message = str(raised.value.code)
    assert message.startswith("train_speed.py: error:") and "\n" not in message


def test_train_speed_stays_short():
    """Read in one sitting: the script was 477 lines before the fast path became one named choice."""
    assert len((BENCHMARKS / "train_speed.py").read_text(encoding="utf-8").splitlines()) < 270


# --- ddp_scaling.py: tokens/s on 1 and N processes, side by side ---------------------------------------------

@pytest.mark.slow
def test_ddp_scaling_script(capsys):
    """Two real torchrun launches (1 and 2 processes, gloo), 2 tiny steps each."""
    script = load_script("ddp_scaling")
    assert script.main(["--device", "cpu", "--config", "tiny", "--context-length", "16", "--steps", "2",
                        "--warmup", "1", "--repeats", "1", "--threads", "1", "--batch-size", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("machine: CPU: ") and line.endswith("backend gloo") for line in lines), lines
    assert re.fullmatch(r"\s+2\s+64\s+\d+\.\d\d\s+[\d,]+", lines[-3])  # 2 processes x 2 windows x 16 tokens
    assert re.fullmatch(r"speedup: \d+\.\d\dx \(2 processes over 1\)", lines[-2])
    assert re.fullmatch(r"scaling efficiency: \d+% \(speedup / 2; 100% is perfect scaling\)", lines[-1])


@pytest.mark.parametrize("args, fragment", [(["--device", "tpu"], "tpu"), (["--nproc", "1"], "--nproc >= 2")])
def test_ddp_scaling_bad_arguments_are_one_line(capsys, args, fragment):
    script = load_script("ddp_scaling")
    with pytest.raises(SystemExit) as raised:
        script.parse_args(args)
    message = str(raised.value.code) if raised.value.code != 2 else capsys.readouterr().err.strip().splitlines()[-1]
    assert "ddp_scaling.py: error:" in message and fragment in message
