import math

import numpy as np
import pytest
import torch

from conftest import needs_cpu_bf16
from lstmgen.config import ModelConfig, build_config
from lstmgen.errors import LstmgenError
from lstmgen.evaluation.score import describe_oov, score_ids
from lstmgen.model.lstm import LSTMLM, count_parameters
from lstmgen.tokens.batches import IGNORE_INDEX, row_starts


def test_seed_preset_builds_exactly_the_seeds_architecture():
    config = build_config("seed")
    model = LSTMLM(config.model, 5000)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes == {
        "embedding.weight": (5000, 128),
        "lstm.weight_ih_l0": (4 * 1024, 128), "lstm.weight_hh_l0": (4 * 1024, 1024),
        "lstm.bias_ih_l0": (4 * 1024,), "lstm.bias_hh_l0": (4 * 1024,),
        "decoder.weight": (5000, 1024), "decoder.bias": (5000,),
    }
    assert model.lstm.batch_first and model.lstm.num_layers == 1 and config.model.dropout == 0
    t = config.train
    assert (t.batch_size, t.seq_len, t.lr, t.clip, t.epochs, t.optimizer) == (20, 30, 0.002, 0.5, 5.0, "adam")
    assert config.tokenizer.tokenizer == "word"


def test_tied_output_shares_the_embedding_through_a_projection():
    model = LSTMLM(ModelConfig(embed_size=8, hidden_size=16, output="tied"), 50)
    assert model.decoder.weight is model.embedding.weight
    assert model.projection.weight.shape == (8, 16)
    full = LSTMLM(ModelConfig(embed_size=8, hidden_size=16, output="full"), 50)
    assert count_parameters(model) < count_parameters(full)


def test_every_output_kind_gives_normalised_log_probs_and_a_matching_loss():
    torch.manual_seed(0)
    x = torch.randint(0, 300, (2, 5))
    for output in ("full", "tied", "adaptive"):
        model = LSTMLM(ModelConfig(embed_size=8, hidden_size=16, output=output, adaptive_cutoffs="50,150"), 300)
        features, _ = model.features(x)
        logp = model.log_probs(features.reshape(-1, features.shape[-1]))
        assert torch.allclose(logp.exp().sum(-1), torch.ones(10), atol=1e-4)
        y = torch.randint(0, 300, (2, 5))
        picked = -logp.gather(1, y.reshape(-1, 1)).mean()
        assert torch.allclose(model.nll(features, y), picked, atol=1e-4), output


def test_state_carries_across_windows_like_one_long_window():
    torch.manual_seed(0)
    model = LSTMLM(ModelConfig(embed_size=8, hidden_size=16), 30)
    x = torch.randint(0, 30, (3, 10))
    whole, _ = model.features(x)
    first, state = model.features(x[:, :4])
    second, _ = model.features(x[:, 4:], state)
    assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-6)


def test_adaptive_cutoffs_follow_the_vocabulary_size():
    from lstmgen.model.lstm import adaptive_cutoffs

    auto = ModelConfig(output="adaptive")
    assert adaptive_cutoffs(auto, 6314) == [500, 2000]  # characters
    assert adaptive_cutoffs(auto, 33278) == [2000, 10000]  # WikiText-2 words
    assert adaptive_cutoffs(auto, 136729) == [2000, 10000, 50000]  # the seed's jieba words
    assert adaptive_cutoffs(auto, 40) == [39]  # a tiny vocabulary still builds
    assert adaptive_cutoffs(ModelConfig(output="adaptive", adaptive_cutoffs="100,300"), 1000) == [100, 300]


@pytest.mark.parametrize("amp", [False, pytest.param(True, marks=needs_cpu_bf16)])
def test_padded_logits_give_the_same_loss_gradients_and_log_probs(amp):
    """On a GPU under autocast the output layer scores a vocabulary padded to a multiple of 64 (fast
    kernels); the padding must change no number a user sees. Forced on the CPU here; fp32 is not padded."""
    x, y = torch.randint(0, 301, (3, 7)), torch.randint(0, 301, (3, 7))
    y[0, :2] = -100  # pads are ignored either way
    for output in ("full", "tied"):
        results = []
        for pad_on in ((), ("cpu",)):
            torch.manual_seed(0)
            model = LSTMLM(ModelConfig(embed_size=8, hidden_size=16, output=output), 301)
            model.pad_logits_on = pad_on
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                loss, _ = model(x, y)
                features, _ = model.features(x)
                logp = model.log_probs(features.reshape(-1, features.shape[-1]))
                columns = model._logits(features.reshape(-1, features.shape[-1])).shape[-1]
            assert columns == (320 if pad_on and amp else 301)  # padded under autocast only
            loss.backward()
            results.append((loss.detach(), logp.detach().float(), [p.grad.clone() for p in model.parameters()]))
        (loss_a, logp_a, grads_a), (loss_b, logp_b, grads_b) = results
        assert logp_b.shape == (21, 301) and torch.isfinite(logp_b).all()
        assert torch.allclose(loss_a, loss_b, atol=1e-6 if not amp else 1e-3), (output, amp)
        assert torch.allclose(logp_a, logp_b, atol=1e-5 if not amp else 1e-2), (output, amp)
        for a, b in zip(grads_a, grads_b):
            assert torch.isfinite(b).all() and torch.allclose(a, b, atol=1e-6 if not amp else 2e-3), (output, amp)


def test_weight_drop_masks_recurrent_weights_in_training_only():
    torch.manual_seed(0)
    config = ModelConfig(embed_size=8, hidden_size=16, num_layers=2, weight_drop=0.5)
    model = LSTMLM(config, 30)
    plain = LSTMLM(ModelConfig(embed_size=8, hidden_size=16, num_layers=2), 30)
    plain.load_state_dict(model.state_dict())  # same parameters: weight drop adds none
    x, y = torch.randint(0, 30, (3, 10)), torch.randint(0, 30, (3, 10))

    model.eval(), plain.eval()
    assert torch.equal(model(x, y)[0], plain(x, y)[0])  # no mask when scoring

    model.train()
    model(x, y)[0].backward()
    for layer in (0, 1):
        hh, ih = getattr(model.lstm, f"weight_hh_l{layer}"), getattr(model.lstm, f"weight_ih_l{layer}")
        dropped = (hh.grad == 0).float().mean()
        assert 0.35 < dropped < 0.65  # about half the recurrent connections got no gradient this window
        assert (ih.grad == 0).float().mean() < 0.05  # the input weights are not masked
    # afterwards the module runs on its own parameters again, not on the last window's masked copies
    model.eval()
    assert torch.equal(model(x, y)[0], plain(x, y)[0])


def test_embed_drop_drops_whole_token_types_in_training_only():
    torch.manual_seed(0)
    model = LSTMLM(ModelConfig(embed_size=8, hidden_size=16, embed_drop=0.5), 6)
    inputs = torch.tensor([[0, 1, 2, 3, 4, 5] * 5] * 4)  # every type, many times
    seen: dict[int, set] = {}
    captured = []
    model.lstm.register_forward_hook(lambda mod, args, out: captured.append(args[0].detach()))
    model.train()
    for _ in range(20):
        model.features(inputs)
        x, plain = captured.pop(), model.embedding(inputs).detach()
        for token in range(6):
            ratio = x[inputs == token] / plain[inputs == token]
            assert torch.allclose(ratio, ratio.flatten()[0])  # one decision for all of a type's occurrences
            seen.setdefault(token, set()).add(round(float(ratio.flatten()[0]), 4))
    assert all(values == {0.0, 2.0} for values in seen.values())  # dropped, or kept and scaled by 1 / keep
    model.eval()
    model.features(inputs)
    assert torch.equal(captured.pop(), model.embedding(inputs))


def test_locked_dropout_keeps_one_mask_through_the_sequence():
    torch.manual_seed(0)
    model = LSTMLM(ModelConfig(embed_size=32, hidden_size=16, dropout=0.5, locked_dropout=True), 10)
    captured = []
    model.lstm.register_forward_hook(lambda mod, args, out: captured.append(args[0].detach()))
    inputs = torch.full((3, 12), 4)  # the same token at every step: any change over time is the mask's
    model.train()
    model.features(inputs)
    x = captured.pop()
    zeros = x == 0
    assert torch.equal(zeros, zeros[:, :1].expand_as(zeros))  # the same features dropped at every step
    assert 0.3 < zeros.float().mean() < 0.7
    assert not torch.equal(zeros[0], zeros[1])  # a mask of its own for each sequence
    unlocked = LSTMLM(ModelConfig(embed_size=32, hidden_size=16, dropout=0.5), 10)
    unlocked.lstm.register_forward_hook(lambda mod, args, out: captured.append(args[0].detach()))
    unlocked.train()
    unlocked.features(inputs)
    zeros = captured.pop() == 0
    assert not torch.equal(zeros, zeros[:, :1].expand_as(zeros))  # plain dropout: a new mask each step
    model.eval()
    model.features(inputs)
    assert torch.equal(captured.pop(), model.embedding(inputs))


def test_per_position_loss_sums_to_the_total_and_is_zero_where_skipped():
    torch.manual_seed(0)
    x = torch.randint(0, 300, (2, 6))
    y = torch.randint(0, 300, (2, 6))
    y[0, :2] = IGNORE_INDEX
    for output in ("full", "tied", "adaptive"):
        model = LSTMLM(ModelConfig(embed_size=8, hidden_size=16, output=output, adaptive_cutoffs="50,150"), 300)
        features, _ = model.features(x)
        per = model.nll(features, y, reduction="none")
        assert per.shape == (12,) and (per[:2] == 0).all() and (per[2:] > 0).all(), output
        assert torch.allclose(per.sum(), model.nll(features, y, reduction="sum"), atol=1e-4), output


def test_the_score_says_what_the_unknown_targets_cost():
    # One row, one window: the <unk> targets' loss is read off log_probs by hand.
    torch.manual_seed(0)
    ids = np.array([3, 0, 7, 9, 0, 0, 4, 2, 0, 5], dtype=np.int32)
    for output in ("full", "adaptive"):
        model = LSTMLM(ModelConfig(embed_size=8, hidden_size=16, output=output, adaptive_cutoffs="4"), 12).eval()
        score = score_ids(model, ids, characters=20, batch_size=1, seq_len=16)
        with torch.no_grad():
            features, _ = model.features(torch.from_numpy(ids[None, :-1]).long())
            logp = model.log_probs(features[0])
        targets = torch.from_numpy(ids[1:]).long()
        picked = -logp.gather(1, targets[:, None])[:, 0]
        assert score.unknown == 4 and score.tokens == 9
        assert score.unknown_nll == pytest.approx(float(picked[targets == 0].sum()), rel=1e-4), output
        assert score.nll == pytest.approx(float(picked.sum()), rel=1e-4), output
        assert score.unknown_share == pytest.approx(score.unknown_nll / score.nll)
    assert describe_oov(0.0013, 0.0) == "0.13%"
    assert describe_oov(0.067, 0.153) == "6.70% (15.3% of the loss)"


def test_eval_tokens_scores_the_first_n_tokens_with_their_share_of_the_characters():
    # --eval-tokens N validates on the start of the split only: bits per character must stay
    # comparable with a full score, so the characters are cut in the same proportion.
    torch.manual_seed(0)
    model = LSTMLM(ModelConfig(embed_size=8, hidden_size=16), 30)
    ids = np.random.default_rng(0).integers(0, 30, 1000).astype(np.int32)
    part = score_ids(model, ids, characters=1500, max_tokens=400)
    head = score_ids(model, ids[:400], characters=600)
    assert (part.tokens, part.characters, part.nll) == (head.tokens, head.characters, head.nll)
    assert score_ids(model, ids, characters=1500).tokens > part.tokens


def test_bits_per_char_divide_by_the_characters_of_the_scored_tokens_only():
    # 40 one-character tokens in rows of 3 (14 rows): the row starts have no context and are not
    # scored. A short file scored with all 40 characters would read a third better than it is.
    torch.manual_seed(0)
    model = LSTMLM(ModelConfig(embed_size=8, hidden_size=16), 30)
    ids = np.random.default_rng(2).integers(0, 30, 40).astype(np.int32)
    score = score_ids(model, ids, characters=40, batch_size=16)
    assert len(row_starts(40, 16)) == 14 and score.tokens == 26 and score.characters == 26
    assert score.bits_per_char == pytest.approx(score.nll / math.log(2) / 26)
    twice = score_ids(model, ids, characters=80, batch_size=16)  # two characters a token: twice as many
    assert twice.characters == 52


@needs_cpu_bf16
@pytest.mark.parametrize("output", ["tied", "full", "adaptive"])
def test_bf16_autocast_on_the_cpu_trains_and_scores_close_to_fp32(output):
    torch.manual_seed(0)
    # the adaptive softmax with two tail clusters: --amp bf16 on a CPU once failed in them (the default recipe)
    model = LSTMLM(ModelConfig(embed_size=8, hidden_size=16, output=output, adaptive_cutoffs="50,150"), 300)
    ids = np.random.default_rng(1).integers(0, 300, 500).astype(np.int32)
    full = score_ids(model, ids, characters=500)
    half = score_ids(model, ids, characters=500, amp="bf16")
    assert half.nll != full.nll  # autocast did run in bf16 ...
    assert half.bits_per_char == pytest.approx(full.bits_per_char, rel=0.02)  # ... and scores about the same
    x = torch.from_numpy(ids[:64].astype(np.int64)).view(4, 16)
    y = torch.from_numpy(ids[1:65].astype(np.int64)).view(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = model(x, y)
        log_probs = model.log_probs(model.features(x)[0][:, -1])
    loss.backward()
    assert loss.dtype == torch.float32 and all(p.grad is not None for p in model.parameters())
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(4), atol=1e-3)


@pytest.mark.parametrize("amx, kernel", [pytest.param(True, True, marks=needs_cpu_bf16), (True, False), (False, True)])
def test_amp_auto_trains_in_bf16_on_a_cpu_only_with_amx_and_a_bf16_kernel_and_always_scores_in_fp32(
        amx, kernel, tmp_path, monkeypatch, capsys):
    from conftest import make_text
    from lstmgen import device
    from lstmgen.cli.main import main

    monkeypatch.setattr(device, "cpu_has_amx", lambda: amx)
    if not kernel:
        monkeypatch.setattr(device, "bf16_problem", lambda _: "this CPU has no bf16 LSTM kernel")
    cpu = torch.device("cpu")
    auto = device.choose_precision(cpu, "auto")
    assert auto.steps_bf16 is (amx and kernel) and not auto.scoring_bf16
    off = device.choose_precision(cpu, "off")
    assert (off.steps_bf16, off.scoring_bf16, off.reason) == (False, False, "fp32: --amp off")
    (tmp_path / "novel.txt").write_text(make_text(1, 60), encoding="utf-8")
    assert main(["train", str(tmp_path / "novel.txt"), "--out", str(tmp_path / "run"), "--preset", "tiny",
                 "--epochs", "0.3"]) == 0
    said = capsys.readouterr().err  # the step's precision, and why, is said at the start
    expected = ("on cpu (bf16 autocast in training steps, fp32 in scoring: this CPU has AMX);" if amx and kernel
                else "on cpu (fp32: this CPU has no bf16 LSTM kernel);" if amx
                else "on cpu (fp32: this CPU has no AMX, and bf16 without it is slower than fp32);")
    assert expected in said, said


def test_amp_bf16_runs_where_a_bf16_step_runs_and_is_refused_before_anything_is_written_elsewhere(
        tmp_path, monkeypatch, capsys):
    from conftest import make_text
    from lstmgen import device
    from lstmgen.cli.main import main

    cpu = torch.device("cpu")
    if device.bf16_problem(cpu) is None:
        both = device.choose_precision(cpu, "bf16")
        assert both.steps_bf16 and both.scoring_bf16
    with pytest.raises(LstmgenError, match="not on mps"):
        device.choose_precision(torch.device("mps"), "bf16")
    assert not device.choose_precision(torch.device("mps"), "auto").steps_bf16
    monkeypatch.setattr(device, "bf16_problem", lambda _: "this CPU has no bf16 LSTM kernel")
    with pytest.raises(LstmgenError, match="--amp bf16: this CPU has no bf16 LSTM kernel; use --amp auto or off"):
        device.choose_precision(cpu, "bf16")
    (tmp_path / "novel.txt").write_text(make_text(1, 60), encoding="utf-8")
    run = tmp_path / "runs" / "bf16"
    code = main(["train", str(tmp_path / "novel.txt"), "--out", str(run), "--preset", "tiny", "--amp", "bf16"])
    err = capsys.readouterr().err
    assert code == 2 and err == ("lstmgen: error: --amp bf16: this CPU has no bf16 LSTM kernel; use --amp auto or "
                                 "off on this machine\n")
    assert not (tmp_path / "runs").exists()  # no run folder, not even its parent


def test_under_an_avx2_hold_amp_bf16_exits_2_with_one_line_where_the_probe_fails(tmp_path):
    """The CPU that users reported: oneDNN and ATen held to AVX2 (as on an AVX2-only AMD EPYC), a
    real process, a real probe."""
    import os
    import subprocess
    import sys

    from conftest import make_text

    hold = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    probe = "import torch; from lstmgen.device import bf16_problem; print(bf16_problem(torch.device('cpu')))"
    said = subprocess.run([sys.executable, "-c", probe], env=hold, capture_output=True, text=True, check=True)
    if said.stdout.strip() == "None":
        pytest.skip("this CPU runs a bf16 LSTM step even with oneDNN held to AVX2 (not x86?)")
    (tmp_path / "novel.txt").write_text(make_text(1, 60), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "lstmgen", "train", "novel.txt", "--out", "runs/x", "--preset",
                           "tiny", "--amp", "bf16"], env=hold, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("lstmgen: error: --amp bf16: this CPU has no bf16 LSTM kernel; use --amp auto or off on "
                           "this machine\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["novel.txt"]


def test_a_gpu_without_bf16_trains_in_fp32_under_auto_and_refuses_amp_bf16(monkeypatch):
    from lstmgen import device

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _=None: "Tesla T4")
    device._bf16_problem.cache_clear()
    try:
        gpu = torch.device("cuda", 0)
        auto = device.choose_precision(gpu, "auto")
        assert not auto.steps_bf16 and auto.reason == "fp32: this GPU (Tesla T4, compute capability 7.5) has no bf16"
        with pytest.raises(LstmgenError, match=r"--amp bf16: this GPU \(Tesla T4, compute capability 7.5\) has no"):
            device.choose_precision(gpu, "bf16")
    finally:
        device._bf16_problem.cache_clear()


def test_the_bf16_probe_leaves_the_random_numbers_of_a_run_alone():
    from lstmgen import device

    device._bf16_problem.cache_clear()
    torch.manual_seed(7)
    device.bf16_problem(torch.device("cpu"))  # probed for real here: weights drawn inside fork_rng
    after_probe = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(after_probe, torch.rand(3))


def test_an_isa_held_below_amx_keeps_a_cpu_in_fp32(monkeypatch):
    from lstmgen import device

    monkeypatch.setattr(device, "_cpu_flags", lambda: frozenset({"avx512f", "amx_tile", "amx_bf16", "amx_int8"}))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert device.cpu_has_amx() is torch.backends.mkldnn.is_available()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")  # where bf16 was 0.72x fp32's speed
    assert not device.cpu_has_amx()
    monkeypatch.setattr(device, "_cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert not device.cpu_has_amx()
