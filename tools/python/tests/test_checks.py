"""The binding's argument checks, without torch, the library or a GPU (fake tensors)."""

import pytest

from fake_tensor import CPU, CUDA0, CUDA1, FakeTensor, bf16, fp16, fp32, fp64
from tfla import TflaArgumentError
from tfla._binding import config_text, parse_config
from tfla._checks import check_forward, check_step, describe, layout_ok

B, NH, S, DQK, DV = 2, 3, 40, 32, 48


def inputs(dtype=bf16, gate_dtype=fp32, device=CUDA0):
    q = FakeTensor((B, NH, S, DQK), dtype, device)
    k = FakeTensor((B, NH, S, DQK), dtype, device)
    v = FakeTensor((B, NH, S, DV), dtype, device)
    i = FakeTensor((B, NH, S), gate_dtype, device)
    f = FakeTensor((B, NH, S), gate_dtype, device)
    return q, k, v, i, f


def forward(q, k, v, i, f, c0=None, n0=None, m0=None, **kw):
    d = lambda name, t: None if t is None else describe(name, t)
    return check_forward(describe("q", q), describe("k", k), describe("v", v), describe("i", i), describe("f", f),
                         d("c_initial", c0), d("n_initial", n0), d("m_initial", m0), **kw)


def raises(match, fn, *args, **kw):
    with pytest.raises(TflaArgumentError, match=match) as e:
        fn(*args, **kw)
    assert isinstance(e.value, ValueError)  # catchable as a ValueError too
    return e.value


def test_valid_contiguous_plan():
    plan = forward(*inputs())
    assert (plan.B, plan.NH, plan.S, plan.Dqk, plan.Dv) == (B, NH, S, DQK, DV)
    assert plan.dtype == "bfloat16" and plan.gate_dtype == "float32"
    assert plan.strides["q"] == (NH * S * DQK, S * DQK, DQK)
    assert plan.strides["i"] == (NH * S, S, 1)
    f = plan.problem_fields()
    assert f["dtype"] == 0 and f["gate_dtype"] == 2 and f["variant"] == 0 and f["normalize"] == 1


@pytest.mark.parametrize("dtype,code", [(bf16, 0), (fp16, 1), (fp32, 2)])
def test_every_supported_dtype(dtype, code):
    plan = forward(*inputs(dtype=dtype, gate_dtype=dtype))
    assert plan.problem_fields()["dtype"] == code and plan.problem_fields()["gate_dtype"] == code


def test_xlstm_layout_is_passed_without_copy():
    # xLSTM projects to (B, S, NH, D) and transposes to (B, NH, S, D): strided, no copy needed
    q = FakeTensor((B, S, NH, DQK)).transpose12()
    k = FakeTensor((B, S, NH, DQK)).transpose12()
    v = FakeTensor((B, S, NH, DV)).transpose12()
    i = FakeTensor((B, S, NH), fp32)
    i_t = FakeTensor((B, NH, S), fp32, strides=(S * NH, 1, NH), ptr=i.data_ptr())
    f_t = FakeTensor((B, NH, S), fp32, strides=(S * NH, 1, NH))
    plan = forward(q, k, v, i_t, f_t)
    assert plan.strides["q"] == (S * NH * DQK, DQK, NH * DQK)
    assert plan.strides["v"] == (S * NH * DV, DV, NH * DV)
    assert plan.strides["i"] == (S * NH, 1, NH)


def test_size_one_dims_get_usable_strides():
    q = FakeTensor((1, 1, 1, DQK), strides=(7, 5, 3, 1))  # strides of size-1 dims are arbitrary
    k = FakeTensor((1, 1, 1, DQK))
    v = FakeTensor((1, 1, 1, DV))
    i = FakeTensor((1, 1, 1), fp32, strides=(0, 0, 0))
    f = FakeTensor((1, 1, 1), fp32)
    plan = forward(q, k, v, i, f)
    assert plan.strides["q"] == (DQK, DQK, DQK)
    assert plan.strides["i"] == (1, 1, 1)


def test_dtype_errors():
    q, k, v, i, f = inputs()
    raises(r"q has dtype float64; tfla supports bfloat16, float16 and float32",
           forward, FakeTensor(q.shape, fp64), k, v, i, f)
    raises(r"k has dtype float16 but q has bfloat16", forward, q, FakeTensor(k.shape, fp16), v, i, f)
    raises(r"v has dtype float32 but q has bfloat16", forward, q, k, FakeTensor(v.shape, fp32), i, f)
    raises(r"i has dtype float16; gates must be float32 or the input dtype \(bfloat16\)",
           forward, q, k, v, FakeTensor(i.shape, fp16), f)
    raises(r"i has dtype bfloat16 but f has float32", forward, q, k, v, FakeTensor(i.shape, bf16), f)


def test_device_errors():
    q, k, v, i, f = inputs()
    raises(r"q is on cpu: tfla runs on CUDA tensors", forward, FakeTensor(q.shape, device=CPU), k, v, i, f)
    raises(r"v is on cuda:1 but q is on cuda:0", forward, q, k, FakeTensor(v.shape, device=CUDA1), i, f)
    raises(r"f is on cpu", forward, q, k, v, i, FakeTensor(f.shape, fp32, CPU))
    c0 = FakeTensor((B, NH, DQK, DV), fp32, CUDA1)
    raises(r"c_initial is on cuda:1 but q is on cuda:0", forward, q, k, v, i, f, c0)


def test_shape_errors():
    q, k, v, i, f = inputs()
    raises(r"q must be 4-D \(B, NH, S, Dqk\); got shape \(2, 3, 40\)", forward, FakeTensor((B, NH, S)), k, v, i, f)
    raises(r"k has shape \(2, 3, 40, 64\) but q has \(2, 3, 40, 32\)", forward, q, FakeTensor((B, NH, S, 64)), v, i, f)
    raises(r"v has shape \(2, 3, 41, 48\); its \(B, NH, S\) must match", forward, q, k, FakeTensor((B, NH, S + 1, DV)), i, f)
    raises(r"i has shape \(2, 3, 39\); gates are \(B, NH, S\)", forward, q, k, v, FakeTensor((B, NH, S - 1), fp32), f)
    raises(r"f must be 3-D \(B, NH, S\)", forward, q, k, v, i, FakeTensor((B, NH, S, 1), fp32))
    raises(r"the sequence is empty", forward, *inputs_with_s(0))


def inputs_with_s(s):
    return (FakeTensor((B, NH, s, DQK)), FakeTensor((B, NH, s, DQK)), FakeTensor((B, NH, s, DV)),
            FakeTensor((B, NH, s), fp32), FakeTensor((B, NH, s), fp32))


def test_layout_errors():
    q, k, v, i, f = inputs()
    qt = FakeTensor(q.shape, strides=(NH * S * DQK, S * DQK, 1, S))  # last dim not contiguous
    raises(r"q \(2, 3, 40, 32\) has strides \(3840, 1280, 1, 40\): its last dimension must be contiguous",
           forward, qt, k, v, i, f)
    kb = FakeTensor(k.shape, strides=(0, 0, 0, 1))  # broadcast of one row
    raises(r"k is broadcast", forward, q, kb, v, i, f)
    ib = FakeTensor(i.shape, fp32, strides=(0, 0, 0))
    raises(r"i is broadcast", forward, q, k, v, ib, f)


def test_state_errors():
    q, k, v, i, f = inputs()
    good_c = FakeTensor((B, NH, DQK, DV), fp32)
    raises(r"c_initial has dtype bfloat16; tfla keeps the mLSTM states in float32",
           forward, q, k, v, i, f, FakeTensor((B, NH, DQK, DV), bf16))
    raises(r"c_initial has shape \(2, 3, 48, 32\); expected \(2, 3, 32, 48\)",
           forward, q, k, v, i, f, FakeTensor((B, NH, DV, DQK), fp32))
    ct = FakeTensor((B, NH, DQK, DV), fp32, strides=(NH * DQK * DV, DQK * DV, 1, DQK))
    raises(r"states must be contiguous", forward, q, k, v, i, f, ct)
    raises(r"n_initial has shape \(2, 3, 48\); expected \(2, 3, 32\)",
           forward, q, k, v, i, f, good_c, FakeTensor((B, NH, DV), fp32))
    raises(r"m_initial has shape \(2, 3, 2\); expected \(2, 3, 1\) or \(2, 3\)",
           forward, q, k, v, i, f, good_c, None, FakeTensor((B, NH, 2), fp32))
    plan = forward(q, k, v, i, f, good_c, FakeTensor((B, NH, DQK), fp32), FakeTensor((B, NH), fp32))
    assert plan.B == B
    # mLSTMsig has no stabilizer: its m_initial is ignored, whatever it is
    forward(q, k, v, i, f, good_c, None, FakeTensor((9,), fp64), variant="sig")


def test_option_errors():
    raises(r"variant must be 'exp' \(mLSTMexp\) or 'sig'", forward, *inputs(), variant="tanh")
    raises(r"normalize=False exists only for variant 'sig'", forward, *inputs(), normalize=False)
    raises(r"eps must be finite and >= 0", forward, *inputs(), eps=-1.0)
    raises(r"qk_scale must be finite", forward, *inputs(), scale=float("nan"))
    plan = forward(*inputs(), variant="sig", normalize=False)
    assert plan.problem_fields()["normalize"] == 0 and plan.problem_fields()["variant"] == 1


def test_not_a_tensor():
    q, k, v, i, f = inputs()
    raises(r"q must be a torch.Tensor, got list", forward, [1, 2], k, v, i, f)
    raises(r"i is None", forward, q, k, v, None, f)


def step(q, k, v, i, f, c, n, m, **kw):
    d = lambda name, t: None if t is None else describe(name, t)
    return check_step(d("q", q), d("k", k), d("v", v), d("i", i), d("f", f), d("c", c), d("n", n),
                      d("m", m), **kw)


def states(dqk=DQK, dv=DV):
    return FakeTensor((B, NH, dqk, dv), fp32), FakeTensor((B, NH, dqk), fp32), FakeTensor((B, NH, 1), fp32)


def test_step_one_token_and_fused():
    q, k, v = FakeTensor((B, NH, DQK)), FakeTensor((B, NH, DQK)), FakeTensor((B, NH, DV))
    i, f = FakeTensor((B, NH, 1), fp32), FakeTensor((B, NH), fp32)
    plan = step(q, k, v, i, f, *states())
    assert plan.S == 1 and plan.strides["q"] == (NH * DQK, DQK, DQK) and plan.strides["f"] == (NH, 1, 1)
    T = 4
    q4, k4, v4 = FakeTensor((B, NH, T, DQK)), FakeTensor((B, NH, T, DQK)), FakeTensor((B, NH, T, DV))
    plan = step(q4, k4, v4, FakeTensor((B, NH, T), fp32), FakeTensor((B, NH, T), fp32), *states())
    assert plan.S == T


def test_step_errors():
    q, k, v = FakeTensor((B, NH, DQK)), FakeTensor((B, NH, DQK)), FakeTensor((B, NH, DV))
    i, f = FakeTensor((B, NH, 1), fp32), FakeTensor((B, NH, 1), fp32)
    c, n, m = states()
    raises(r"q must be \(B, NH, Dqk\) for one token", step, FakeTensor((DQK,)), k, v, i, f, c, n, m)
    raises(r"one-token gates are \(B, NH, 1\) or \(B, NH\)", step, q, k, v, FakeTensor((B, NH, 2), fp32), f, c, n, m)
    raises(r"the step needs the states c, n and m", step, q, k, v, i, f, c, n, None)
    raises(r"c has shape \(2, 3, 48, 32\); expected \(2, 3, 32, 48\)", step, q, k, v, i, f, *states(DV, DQK)[:1], n, m)
    raises(r"n has dtype bfloat16", step, q, k, v, i, f, c, FakeTensor((B, NH, DQK), bf16), m)
    step(q, k, v, i, f, c, n, None, variant="sig")  # mLSTMsig needs no m


def test_layout_ok_decides_gradient_copies():
    ok = describe("dh", FakeTensor((B, NH, S, DV)))
    assert layout_ok(ok)
    assert not layout_ok(describe("dh", FakeTensor((B, NH, S, DV), strides=(0, 0, 0, 0))))  # expand
    assert not layout_ok(describe("dh", FakeTensor((B, NH, S, DV), ptr=(1 << 20) + 2)))   # misaligned
    assert not layout_ok(describe("dh", FakeTensor((B, NH, S, 24), strides=(NH * S * 25, S * 25, 25, 1))))


def test_config_text_round_trip():
    assert config_text(None) is None and config_text("") is None
    assert config_text({"chunk": 256, "siz_b_q": 64}) == "chunk=256,siz_b_q=64"
    assert parse_config("chunk=256,siz_b_q=64") == {"chunk": 256, "siz_b_q": 64}
    raises(r"config value of 'chunk' must be an int", config_text, {"chunk": 1.5})
    raises(r"config must be None, a 'key=value,...' string or a dict", config_text, 256)
    assert parse_config(" chunk=128 , siz_b_v=64 ") == {"chunk": 128, "siz_b_v": 64}
    for bad in ("chunk=abc", "chunk", "=128", "chunk=1.5"):
        raises(r"bad config item .* expected key=integer", parse_config, bad)


@pytest.mark.parametrize("bad", [1.5, 2.0, True, "4", None])
def test_problem_refuses_sizes_that_are_not_ints(bad):
    from tfla._binding import make_plan
    with pytest.raises(TflaArgumentError, match="B must be an int"):
        make_plan(bad, NH, S, DQK, DV)
    plan = make_plan(2, NH, S, DQK, DV)
    assert plan.B == 2
