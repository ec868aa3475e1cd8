"""Prefix-shared scoring (evaluate/prefix.py) gives lm-eval's HFLM scores: on a sample of every bundled task
each row's per-answer log-likelihood within 1e-4, its is-greedy flag and its acc / acc_norm the same; and on
contexts longer than the model's window, truncated from the left as HFLM does."""

from __future__ import annotations

import math

import pytest
import torch

from rankadaptor.evaluate.tasks import TASKS, data_files

TOL = 1e-4


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from rankadaptor.models.loading import load_model

    model, tokenizer = load_model(str(tiny_model_dir), device=torch.device("cpu"))
    model.config.use_cache = False
    return model.eval(), tokenizer


def lm_pair(model, tokenizer, max_length: int, batch_tokens: int = 2048):
    from lm_eval.models.huggingface import HFLM

    from rankadaptor.evaluate.harness import _lm_class

    ours = _lm_class()(pretrained=model, tokenizer=tokenizer, batch_size=16, max_length=max_length,
                       shared_prefix=True, batch_tokens=batch_tokens)
    assert ours.shared_prefix, "the bundled model's attention should honour a custom mask"
    # HFLM asserts on an answer longer than the window: under a short window the reference is our subclass
    # with sharing off, which leaves such requests out and hands the others to HFLM's own method unchanged.
    theirs = (HFLM(pretrained=model, tokenizer=tokenizer, batch_size=16, max_length=max_length)
              if max_length >= model.config.max_position_embeddings else
              _lm_class()(pretrained=model, tokenizer=tokenizer, batch_size=16, max_length=max_length,
                          shared_prefix=False))
    assert not getattr(theirs, "shared_prefix", False)
    return ours, theirs


def samples(lm, tasks_dir, names, limit):
    import lm_eval.evaluator
    from lm_eval.tasks import TaskManager

    from rankadaptor.evaluate.harness import task_config

    files = data_files(str(tasks_dir), names)
    tasks = TaskManager(include_defaults=False).load([task_config(n, files[n]) for n in names])["tasks"]
    for task in tasks.values():
        task.set_config(key="num_fewshot", value=0)
    with torch.inference_mode():
        results = lm_eval.evaluator.evaluate(lm=lm, task_dict={"tasks": tasks},
                                             samples={n: list(range(limit)) for n in names})
    return {n: sorted(results["samples"][n], key=lambda s: s["doc_id"]) for n in names}


def assert_same_rows(ours, theirs):
    for name in theirs:
        for a, b in zip(ours[name], theirs[name], strict=True):
            assert a["doc_id"] == b["doc_id"]
            for (ll_a, greedy_a), (ll_b, greedy_b) in zip(a["filtered_resps"], b["filtered_resps"], strict=True):
                assert ll_a == ll_b == -math.inf or abs(ll_a - ll_b) <= TOL, (name, a["doc_id"], ll_a, ll_b)
                assert greedy_a == greedy_b, (name, a["doc_id"])
            for metric in [m for m in ("acc", "acc_norm") if m in b]:
                assert a[metric] == b[metric], (name, a["doc_id"], metric)


@pytest.mark.parametrize("max_length", [128, 40])
def test_every_task_scores_as_lm_eval(tiny, tasks_dir, max_length):
    """All seven tasks, 6 rows each, at the model's window (boolq passages overflow it) and at a 40-token
    window (most rows truncated from the left, answers of different lengths then keep different heads)."""
    model, tokenizer = tiny
    ours, theirs = lm_pair(model, tokenizer, max_length, batch_tokens=256)
    names = list(TASKS)
    assert_same_rows(samples(ours, tasks_dir, names, 6), samples(theirs, tasks_dir, names, 6))


def test_overlong_context_truncated_from_the_left(tiny):
    """Synthetic requests: one context three times the window with answers of 1, 3 and 9 tokens (each keeps
    a different head after truncation), a duplicate answer, and a context shared by short answers."""
    model, tokenizer = tiny
    ours, theirs = lm_pair(model, tokenizer, max_length=128, batch_tokens=128)
    g = torch.Generator().manual_seed(0)
    long_ctx = torch.randint(3, 512, (400,), generator=g).tolist()
    short_ctx = torch.randint(3, 512, (20,), generator=g).tolist()
    conts = [torch.randint(3, 512, (n,), generator=g).tolist() for n in (1, 3, 9, 128)]
    requests = [((f"c{i}", f"a{j}"), ctx, cont) for i, ctx in enumerate([long_ctx, short_ctx])
                for j, cont in enumerate(conts + conts[1:2])]
    got = ours._loglikelihood_tokens(requests)
    want = theirs._loglikelihood_tokens(requests)
    assert len(got) == len(want) == len(requests)
    for (ll_a, greedy_a), (ll_b, greedy_b) in zip(got, want):
        assert abs(ll_a - ll_b) <= TOL and greedy_a == greedy_b


def test_sharing_runs_each_head_once():
    """The plan: answers to one context share its tokens, a truncated request keeps its own head."""
    from rankadaptor.evaluate.prefix import plan, tokens_processed

    ctx, requests = [5] * 10, [(None, [5] * 10, [7, 8, 9]), (None, [5] * 10, [6]), (None, [5] * 10, [7, 8, 9])]
    (row,) = plan(requests, max_length=32, batch_tokens=64)
    assert [d.head for d in row] == [tuple(ctx)] and row[0].requests == [[0, 2], [1]]
    assert tokens_processed(requests, 32, 64) == 10 + 2  # lm-eval: 12 + 10 + 12
    (row,) = plan([(None, [1] * 30, [2] * 5), (None, [1] * 30, [3])], max_length=32, batch_tokens=64)
    assert sorted(len(d.head) for d in row) == [28, 30]
