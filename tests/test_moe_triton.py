"""The Triton MoE kernels (align, grouped GEMM, slot sum) against the torch alignment and the fp32 reference.

Without CUDA the kernels run on Triton's CPU interpreter (``TRITON_INTERPRET=1``, set here
before any kernel is made: Triton reads it when a kernel is made, on first use), on tiny
shapes with 16-wide tiles so the file stays fast. With CUDA the same tests run on the GPU,
and ``TestOnCuda`` adds realistic Mixtral- and Qwen3-sized layers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton", reason="the Triton MoE kernels need triton: pip install 'moesaic[gpu]'")

from moe_models import FAMILIES, tiny_model  # noqa: E402

from experts.moe.align import Alignment, align, align_torch, max_padded  # noqa: E402
from experts.moe.block import MoEBlock, moe_blocks  # noqa: E402
from experts.moe.configs import (  # noqa: E402
    ConfigFileError,
    KernelConfig,
    config_file,
    default_config,
    get_config,
    load_table,
    save_table,
)
from experts.moe.fused import experts_triton  # noqa: E402
from experts.moe.reference import experts_grouped, experts_reference  # noqa: E402
from experts.moe.spec import moe_spec  # noqa: E402

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETING else "cuda"
pytestmark = pytest.mark.skipif(
    not INTERPRETING and not torch.cuda.is_available(),
    reason="no CUDA device and TRITON_INTERPRET is not 1: the Triton kernels cannot run here",
)
SMALL = KernelConfig(block_m=16, block_n=16, block_k=16, group_m=2, num_warps=1, num_stages=1)
E, H, I = 4, 32, 16  # noqa: E741 - the expert width is I everywhere in this path


def routing(tokens: int, top_k: int, experts: int, pattern: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, ids) on the CPU: distinct experts per token, like the router; ``pattern`` shapes the choice.

    random: any experts. idle: expert 2 never chosen. one: every token's first slot on expert 2,
    the others dropped. dropped: random, then about a third of the later slots dropped — with
    a non-zero weight left on them, so only skipping them (not a zero weight) gives the reference.
    """
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(tokens, experts, generator=generator)
    if pattern == "idle":
        scores[:, 2] = -1.0
    if pattern == "one":
        scores[:, 2] = 2.0
    weights, ids = scores.topk(top_k, dim=-1)
    weights = torch.softmax(weights, dim=-1)
    if pattern in ("one", "dropped"):
        drop = torch.zeros_like(ids, dtype=torch.bool)
        drop[:, 1:] = True if pattern == "one" else torch.rand(tokens, top_k - 1, generator=generator) < 0.35
        ids = ids.masked_fill(drop, experts)
        weights = weights.masked_fill(drop, 0.7)
    return weights, ids


def layer(tokens: int, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed + 1)
    hidden = torch.randn(tokens, H, generator=generator)
    w13 = torch.randn(E, 2 * I, H, generator=generator) / H**0.5
    w2 = torch.randn(E, H, I, generator=generator) / I**0.5
    return hidden.to(DEVICE, dtype), w13.to(DEVICE, dtype), w2.to(DEVICE, dtype)


def check_alignment(aligned: Alignment, ids: torch.Tensor, experts: int, block_m: int) -> None:
    """Every routed pair exactly once, in its expert's block-aligned segment; sentinels nowhere."""
    flat = ids.reshape(-1).cpu()
    pairs = flat.numel()
    order = aligned.sorted_pair_ids.cpu()
    owners = aligned.block_expert.cpu()
    used = int(aligned.num_padded.item())
    assert order.numel() >= max_padded(pairs, experts, block_m) and order.numel() % block_m == 0
    assert used % block_m == 0 and (order[used:] == pairs).all() and (owners[used // block_m :] == -1).all()
    real = order[order < pairs].long()
    assert sorted(real.tolist()) == torch.nonzero(flat < experts).flatten().tolist()  # each routed pair once
    routed = order[:used] < pairs
    row_owner = owners.repeat_interleave(block_m)[:used]
    assert torch.equal(row_owner[routed], flat[order[:used][routed].long()].int())  # each block has one expert
    for expert in range(experts):
        count = int((flat == expert).sum())
        assert int((owners == expert).sum()) == -(-count // block_m)  # segment padded to whole blocks


@pytest.mark.parametrize(
    ("tokens", "top_k", "experts", "block_m", "pattern"),
    [
        (1, 1, 4, 16, "random"),
        (5, 2, 4, 16, "idle"),
        (17, 2, 4, 16, "dropped"),
        (40, 1, 4, 16, "one"),
        (33, 4, 8, 32, "dropped"),
        (300, 2, 8, 16, "random"),  # more pairs than one 256-pair scan step
    ],
)
def test_align_triton_equals_torch(tokens: int, top_k: int, experts: int, block_m: int, pattern: str) -> None:
    _, ids = routing(tokens, top_k, experts, pattern)
    ids = ids.to(DEVICE)
    ours, reference = align(ids, experts, block_m), align_torch(ids, experts, block_m)
    for field in ("sorted_pair_ids", "block_expert", "num_padded"):
        assert torch.equal(getattr(ours, field), getattr(reference, field)), field
    check_alignment(ours, ids, experts, block_m)


def test_align_reaches_the_worst_case_size() -> None:
    ids = torch.arange(E, device=DEVICE).reshape(E, 1)  # one pair per expert: each pads by block_m - 1
    aligned = align(ids, E, 16)
    assert int(aligned.num_padded.item()) == max_padded(E, E, 16) == aligned.sorted_pair_ids.numel()
    assert aligned.block_expert.tolist() == [0, 1, 2, 3]


PATTERNS = ("random", "idle", "one", "dropped")
CASES = [(k, pattern) for k in (1, 2) for pattern in PATTERNS if (k, pattern) != (1, "dropped")]


@pytest.mark.parametrize("tokens", [1, 5, 17])  # below, at and past one 16-row block
@pytest.mark.parametrize(("top_k", "pattern"), CASES)  # k = 1 has no slot to drop: the first slot always stays
def test_fp32_equals_reference(tokens: int, top_k: int, pattern: str) -> None:
    weights, ids = routing(tokens, top_k, E, pattern, seed=tokens)
    hidden, w13, w2 = layer(tokens, torch.float32, seed=tokens)
    weights, ids = weights.to(DEVICE), ids.to(DEVICE)
    out = experts_triton(hidden, w13, w2, weights, ids, config=SMALL)
    torch.testing.assert_close(out, experts_reference(hidden, w13, w2, weights, ids), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("tokens", "pattern"), [(5, "random"), (17, "dropped"), (17, "idle")])
def test_half_weights_equal_reference_on_the_same_rounded_inputs(dtype: torch.dtype, tokens: int, pattern: str) -> None:
    weights, ids = routing(tokens, 2, E, pattern, seed=tokens)
    hidden, w13, w2 = layer(tokens, dtype, seed=tokens)
    weights, ids = weights.to(DEVICE), ids.to(DEVICE)
    out = experts_triton(hidden, w13, w2, weights, ids, config=SMALL)
    assert out.dtype == dtype
    # ours rounds the intermediate to the weights' dtype (like experts_grouped); the reference keeps it fp32
    reference = experts_reference(hidden, w13, w2, weights, ids)
    torch.testing.assert_close(out.float(), reference.float(), atol=2e-2, rtol=2e-2)


def test_strided_weights_and_the_default_config() -> None:
    """Weights stored transposed (a view, as some checkpoints load) and no explicit config."""
    weights, ids = routing(9, 2, E, "dropped")
    hidden, w13, w2 = layer(9, torch.float32)
    w13_t = w13.transpose(1, 2).contiguous().transpose(1, 2)
    w2_t = w2.transpose(1, 2).contiguous().transpose(1, 2)
    assert not w13_t.is_contiguous()
    out = experts_triton(hidden, w13_t, w2_t, weights.to(DEVICE), ids.to(DEVICE))
    expected = experts_reference(hidden, w13, w2, weights.to(DEVICE), ids.to(DEVICE))
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_block_on_the_triton_engine_equals_transformers_block(family: str) -> None:
    """The whole block (router, shared experts) with engine "triton" and the default tiles, all seven families."""
    model = tiny_model(family).to(DEVICE)
    _, _, block = moe_blocks(model)[0]
    hidden = torch.randn(2, 5, model.config.hidden_size, device=DEVICE)
    with torch.no_grad():
        theirs = block(hidden)
        theirs = theirs[0] if isinstance(theirs, tuple) else theirs
        ours = MoEBlock.from_hf(block, moe_spec(model.config), "triton")(hidden)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_refuses_what_it_cannot_fuse_or_shape() -> None:
    weights, ids = routing(3, 2, E, "random")
    hidden, w13, w2 = layer(3, torch.float32)
    with pytest.raises(ValueError, match="activation 'gelu' needs engine 'grouped'"):
        experts_triton(hidden, w13, w2, weights, ids, act="gelu")
    with pytest.raises(ValueError, match="shapes disagree"):
        experts_triton(hidden, w13[:, :-1], w2, weights, ids)
    empty = experts_triton(hidden[:0], w13, w2, weights[:0], ids[:0])
    assert empty.shape == (0, H)


def test_default_config_is_small_for_decode_and_large_for_prefill() -> None:
    decode = default_config(1, 8, 2, torch.bfloat16)
    prefill = default_config(4096, 8, 2, torch.bfloat16)
    assert decode.block_m == 16 and prefill.block_m >= 64 and prefill.block_n >= decode.block_n
    assert default_config(4096, 8, 2, torch.float32).block_k < prefill.block_k  # fp32 tiles are twice the bytes
    assert default_config(64, 128, 8, torch.bfloat16).block_m == 16  # 4 rows per expert: still decode-like


def test_config_lookup_takes_the_nearest_token_count(tmp_path: Path) -> None:
    assert get_config(8, 14336, torch.bfloat16, 7, 2, "GPU_X", tmp_path) == default_config(7, 8, 2, torch.bfloat16)
    table = {
        1: KernelConfig(block_m=16, block_n=32),
        64: KernelConfig(block_m=32),
        1024: KernelConfig(block_m=128, block_n=128, num_warps=8),
    }
    path = config_file(8, 14336, torch.bfloat16, "GPU_X", tmp_path)
    assert path.name == "E=8,N=14336,dtype=bfloat16,device=GPU_X.json"
    save_table(path, table)
    assert load_table(path) == table
    for tokens, expected in [(1, 1), (2, 1), (40, 64), (544, 64), (545, 1024), (100000, 1024)]:
        assert get_config(8, 14336, torch.bfloat16, tokens, 2, "GPU_X", tmp_path) == table[expected], tokens
    # another dtype or device has no table: the heuristic
    assert get_config(8, 14336, torch.float16, 40, 2, "GPU_X", tmp_path) == default_config(40, 8, 2, torch.float16)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "Expecting property name"),
        ("{}", "non-empty object"),
        (json.dumps({"8": {"BLOCK_M": 16}}), "missing"),
        (json.dumps({"eight": KernelConfig().to_json()}), "invalid literal"),
        (json.dumps({"8": {**KernelConfig().to_json(), "BLOCK_M": 24}}), "power of two"),
    ],
)
def test_a_bad_config_file_is_named(tmp_path: Path, text: str, reason: str) -> None:
    path = config_file(4, 16, torch.bfloat16, "GPU_X", tmp_path)
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=reason) as caught:
        get_config(4, 16, torch.bfloat16, 8, 2, "GPU_X", tmp_path)
    assert str(path) in str(caught.value) and "bench/tune_moe.py" in str(caught.value)


def test_the_tuner_times_the_untuned_heuristic_first() -> None:
    """With a time budget the tuner may stop early: the default it replaces must always be among those timed."""
    from bench_scripts import load_bench

    tune_moe = load_bench("tune_moe")
    for experts, top_k, _, _ in tune_moe.SHAPES.values():
        for tokens in tune_moe.TOKENS:
            heuristic = default_config(tokens, experts, top_k, torch.bfloat16)
            grid = tune_moe.candidates("quick", tokens * top_k / experts, 2)
            order = tune_moe.in_trial_order(grid, heuristic)
            assert order[0] == heuristic and order.count(heuristic) == 1
            assert len(order) == len(grid) + (heuristic not in grid)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: realistic layer sizes")
class TestOnCuda:
    """Mixtral-8x7B- and Qwen3-30B-A3B-sized layers on the GPU, tuned or default tiles."""

    SHAPES = {"mixtral": (8, 2, 4096, 14336), "qwen3": (128, 8, 2048, 768)}  # E, k, H, I

    @staticmethod
    def make(name: str, tokens: int, dtype: torch.dtype, pattern: str = "random"):  # noqa: ANN205
        experts, top_k, width, size = TestOnCuda.SHAPES[name]
        generator = torch.Generator(device="cuda").manual_seed(tokens)
        hidden = torch.randn(tokens, width, device="cuda", generator=generator).to(dtype)
        w13 = (torch.randn(experts, 2 * size, width, device="cuda", generator=generator) / width**0.5).to(dtype)
        w2 = (torch.randn(experts, width, size, device="cuda", generator=generator) / size**0.5).to(dtype)
        weights, ids = routing(tokens, top_k, experts, pattern, seed=tokens)
        return hidden, w13, w2, weights.cuda(), ids.cuda()

    @pytest.mark.parametrize("name", ["mixtral", "qwen3"])
    @pytest.mark.parametrize("tokens", [1, 7, 130, 1024])
    def test_bf16_layer_equals_reference(self, name: str, tokens: int) -> None:
        hidden, w13, w2, weights, ids = self.make(name, tokens, torch.bfloat16, "dropped")
        out = experts_triton(hidden, w13, w2, weights, ids)
        reference = experts_reference(hidden, w13, w2, weights, ids).float()
        scale = reference.abs().max().item()
        assert (out.float() - reference).abs().max().item() <= 2e-2 * scale
        if torch.cuda.get_device_capability() >= (9, 0):  # torch._grouped_mm on CUDA wants Hopper or newer
            grouped = experts_grouped(hidden, w13, w2, weights, ids).float()
            assert (out.float() - grouped).abs().max().item() <= 2e-2 * scale

    @pytest.mark.parametrize("config", [None, KernelConfig(block_m=16, block_n=32, block_k=32, num_stages=2)])
    def test_fp32_layer_is_exact(self, config: KernelConfig | None) -> None:
        hidden, w13, w2, weights, ids = self.make("qwen3", 300, torch.float32, "idle")
        out = experts_triton(hidden, w13, w2, weights, ids, config=config)
        torch.testing.assert_close(out, experts_reference(hidden, w13, w2, weights, ids), atol=1e-4, rtol=1e-4)

    def test_align_at_prefill_size(self) -> None:
        _, ids = routing(4096, 8, 128, "dropped")
        ids = ids.cuda()
        for block_m in (16, 64):
            ours, reference = align(ids, 128, block_m), align_torch(ids, 128, block_m)
            for field in ("sorted_pair_ids", "block_expert", "num_padded"):
                assert torch.equal(getattr(ours, field), getattr(reference, field)), field
            check_alignment(ours, ids, 128, block_m)
