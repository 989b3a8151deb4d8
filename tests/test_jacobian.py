"""sensaudit.core.jacobian: per-example input Jacobians against closed forms, autograd, and finite
differences; chunking; no side effects on the input or the model; refusing bad models."""

from __future__ import annotations

import pytest
import torch
from models import (
    CLOSED_FORM,
    MLP,
    Argmax,
    BatchCentering,
    Detaching,
    Linear,
    MultiOutput,
    Quadratic,
    Sigmoid,
    WrongShape,
    batchnorm_in_train_mode,
    dropout_in_train_mode,
)
from torch import nn

import sensaudit
from sensaudit.core import chunking
from sensaudit.core import jacobian as engine
from sensaudit.core.errors import ModelError
from sensaudit.core.jacobian import STRATEGIES, check_row_independence, scores_and_jacobian
from sensaudit.core.strategy_tuning import TUNED, fastest

# float64 Jacobians agree with their formulas to a few units in the last place.
CLOSE = dict(rtol=1e-12, atol=1e-13)

NO_GRADIENT_PATH = ("the model's output has no gradient path to its input (it detaches, casts "
                    "to integers, or uses argmax/rounding), so its sensitivity cannot be "
                    "measured")
ROW_MIXING = ("the model's score for a row depends on the other rows in its batch (BatchNorm "
              "in training mode?), so per-example gradients would be wrong; put the model in "
              "eval mode before auditing")
RANDOM_SCORES = ("the model gives different scores for the same rows on two calls (dropout or "
                 "other randomness in training mode?); put it in eval mode before auditing")

models = pytest.mark.parametrize("name", sorted(CLOSED_FORM))
strategies = pytest.mark.parametrize("strategy", STRATEGIES)


def test_strategies_are_the_documented_ones():
    assert STRATEGIES == ("auto", "reverse", "reverse-vmap", "forward", "vmap-jacrev")


def test_auto_on_a_cpu_is_the_fixed_rule_and_times_nothing(x):
    model = CLOSED_FORM["multi_output"]()
    # 11 rows in chunks of 1: enough chunks to tune on an accelerator, but not on a CPU.
    jac = sensaudit.input_jacobian(model, x, batch_size=1)
    torch.testing.assert_close(jac, model.expected_jacobian(x), **CLOSE)
    plan = engine.TUNER.start(model, "auto", (x.shape[1], 3, "cpu", x.dtype), n_outputs=3,
                              n_features=x.shape[1], chunks=100)
    assert not plan.active and plan.strategy == "reverse"
    assert plan.candidate(1) is None


def test_auto_on_an_accelerator_times_each_candidate_twice_then_keeps_the_fastest(x):
    model = CLOSED_FORM["multi_output"]()
    key = (x.shape[1], 3, "cuda:0", x.dtype)  # the plan only: nothing runs on a device here
    plan = engine.TUNER.start(model, "auto", key, n_outputs=3, n_features=x.shape[1],
                              chunks=100)
    assert plan.active and plan.strategy == "reverse"
    tried = [plan.candidate(i) for i in range(10)]
    assert tried == [None, *TUNED, *TUNED, None]
    for i, name in enumerate(tried[1:9], start=1):
        plan.record(i, name, 0.5 if name == "forward" else 1.0)
    assert plan.strategy == "forward" and not plan.active
    again = engine.TUNER.start(model, "auto", key, n_outputs=3, n_features=x.shape[1],
                               chunks=100)
    assert again.strategy == "forward" and not again.active  # remembered


def test_tuning_keeps_the_default_unless_another_is_clearly_faster():
    assert fastest({"reverse": 1.0, "forward": 0.95}, default="reverse") == "reverse"
    assert fastest({"reverse": 1.0, "forward": 0.85}, default="reverse") == "forward"
    assert fastest({"reverse": 0.8, "forward": 1.0}, default="forward") == "reverse"


@models
@strategies
def test_jacobian_equals_closed_form(name, strategy, x):
    model = CLOSED_FORM[name]()
    jac = sensaudit.input_jacobian(model, x, strategy=strategy)
    expected = model.expected_jacobian(x)
    assert jac.dtype == torch.float64
    assert jac.shape == expected.shape
    torch.testing.assert_close(jac, expected, **CLOSE)


def test_closed_forms_are_not_trivial(x):
    # Guards the formulas above: they differ between rows where the model is nonlinear, and
    # the multi-output ones give each output its own gradient.
    for model in (Sigmoid(), Quadratic(), MLP()):
        jac = model.expected_jacobian(x)
        assert not torch.allclose(jac[0], jac[1])
    for model in (MultiOutput(), MLP()):
        jac = model.expected_jacobian(x)
        assert jac.shape == (11, 3, 4)
        assert not torch.allclose(jac[:, 0], jac[:, 1])


@models
@strategies
def test_batched_equals_per_example_autograd(name, strategy, x):
    model = CLOSED_FORM[name]()
    jac = sensaudit.input_jacobian(model, x, strategy=strategy)
    per_example = torch.stack([
        torch.autograd.functional.jacobian(lambda row: model(row.unsqueeze(0)).reshape(-1), row)
        for row in x
    ])  # [rows, outputs, features]
    torch.testing.assert_close(jac, per_example, **CLOSE)


@models
def test_batched_equals_central_finite_differences(name, x):
    model = CLOSED_FORM[name]()
    eps = 1e-6
    columns = []
    with torch.no_grad():
        for j in range(x.shape[1]):
            step = torch.zeros_like(x)
            step[:, j] = eps
            up = model(x + step).reshape(x.shape[0], -1)
            down = model(x - step).reshape(x.shape[0], -1)
            columns.append((up - down) / (2 * eps))
    finite_differences = torch.stack(columns, dim=2)  # [rows, outputs, features]
    jac = sensaudit.input_jacobian(model, x)
    # Central differences: O(eps^2) truncation plus ~1e-16 / eps rounding.
    torch.testing.assert_close(jac, finite_differences, rtol=1e-7, atol=1e-8)


class _BackwardFromSensaudit(torch.autograd.Function):
    """model(x) whose backward pass is built from sensaudit's Jacobian, so gradcheck compares
    sensaudit's Jacobians (cross-row zeros included) with its own finite differences."""

    @staticmethod
    def forward(ctx, x, model, strategy):
        scores, jac = scores_and_jacobian(model, x, strategy=strategy)
        ctx.save_for_backward(jac)
        return scores

    @staticmethod
    def backward(ctx, grad_scores):
        (jac,) = ctx.saved_tensors
        return torch.einsum("ro,rof->rf", grad_scores, jac), None, None


@models
@strategies
def test_gradcheck_with_sensaudit_jacobians(name, strategy, x):
    model = CLOSED_FORM[name]()
    inputs = x[:5].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda inp: _BackwardFromSensaudit.apply(inp, model, strategy), (inputs,),
        eps=1e-6, atol=1e-7, rtol=1e-6)


@models
@strategies
def test_chunking_does_not_change_results(name, strategy, x):
    model = CLOSED_FORM[name]()
    one_per_row = sensaudit.input_jacobian(model, x, strategy=strategy, batch_size=1)
    for batch_size in (3, 7, 11, 100, None):
        jac = sensaudit.input_jacobian(model, x, strategy=strategy, batch_size=batch_size)
        # Bit-identical but for matmul blocking, which moves the last bit with the batch size.
        torch.testing.assert_close(jac, one_per_row, rtol=0, atol=1e-14)


@models
@strategies
def test_scores_are_the_model_outputs(name, strategy, x):
    model = CLOSED_FORM[name]()
    scores, jac = scores_and_jacobian(model, x, strategy=strategy, batch_size=3)
    with torch.no_grad():
        expected = model(x).reshape(x.shape[0], -1)
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-14)
    assert scores.shape == (11, jac.shape[1])
    assert not scores.requires_grad
    assert not jac.requires_grad


@strategies
@pytest.mark.parametrize("input_requires_grad", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_input_model_and_parameters_untouched(strategy, input_requires_grad, training, x):
    model = MLP().train(training)
    inputs = x.clone().requires_grad_(input_requires_grad)
    old_grad = torch.full_like(x, 7.0) if input_requires_grad else None
    inputs.grad = old_grad
    before = inputs.detach().clone()

    sensaudit.input_jacobian(model, inputs, strategy=strategy, batch_size=4)

    assert inputs.requires_grad is input_requires_grad
    assert inputs.grad is old_grad
    if old_grad is not None:
        assert torch.equal(old_grad, torch.full_like(x, 7.0))
    assert torch.equal(inputs.detach(), before)
    assert model.training is training
    assert all(p.grad is None for p in model.parameters())


def test_non_leaf_input_keeps_its_graph(x):
    leaf = x.clone().requires_grad_(True)
    inputs = leaf * 2  # a non-leaf with a graph behind it
    sensaudit.input_jacobian(Sigmoid(), inputs)
    inputs.sum().backward()
    assert torch.equal(leaf.grad, torch.full_like(x, 2.0))


def test_parameter_grads_already_set_are_not_changed(x):
    model = Linear()
    model.w.grad = torch.ones_like(model.w)
    sensaudit.input_jacobian(model, x)
    assert torch.equal(model.w.grad, torch.ones_like(model.w))


# --- row independence -------------------------------------------------------------------------


def test_batchnorm_in_training_mode_is_refused(x):
    with pytest.raises(ModelError) as err:
        check_row_independence(batchnorm_in_train_mode(), x)
    assert str(err.value) == (
        "the model fails on a batch of one row (Expected more than 1 value per channel when "
        "training, got input size torch.Size([1, 3])), so its score for a row depends on the "
        "other rows in its batch (BatchNorm in training mode?); put the model in eval mode "
        "before auditing")


def test_row_mixing_model_is_refused(x):
    with pytest.raises(ModelError) as err:
        check_row_independence(BatchCentering(), x)
    assert str(err.value) == ROW_MIXING


def test_dropout_in_training_mode_is_refused(x):
    with pytest.raises(ModelError) as err:
        check_row_independence(dropout_in_train_mode(), x)
    assert str(err.value) == RANDOM_SCORES


@pytest.mark.parametrize("make", [batchnorm_in_train_mode, dropout_in_train_mode])
def test_same_models_in_eval_mode_pass(make, x):
    model = make()
    if isinstance(model[1], nn.BatchNorm1d):
        # Give the running statistics values that are not the defaults, as training would.
        model[1].running_mean.fill_(0.5)
        model[1].running_var.fill_(2.0)
    model.eval()
    check_row_independence(model, x)  # no error
    jac = sensaudit.input_jacobian(model, x)
    per_example = torch.stack([
        torch.autograd.functional.jacobian(lambda row: model(row.unsqueeze(0)).reshape(-1), row)
        for row in x
    ])
    torch.testing.assert_close(jac, per_example, **CLOSE)


@models
def test_closed_form_models_pass_row_independence(name, x):
    check_row_independence(CLOSED_FORM[name](), x)


# --- models that cannot be audited ------------------------------------------------------------


@strategies
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_no_gradient_path_is_refused(strategy, n_outputs, x):
    with pytest.raises(ModelError) as err:
        sensaudit.input_jacobian(Detaching(n_outputs=n_outputs), x, strategy=strategy)
    assert str(err.value) == NO_GRADIENT_PATH


def test_flat_model_gives_zero_jacobian_in_every_strategy(x):
    # A model with a gradient path whose gradient is zero is not an error: the difference
    # from Detaching is what the forward-mode fallback must preserve.
    class Flat(nn.Module):
        def forward(self, inp):
            return torch.relu(inp - 100.0) @ torch.ones(4, 2, dtype=torch.float64)

    for strategy in STRATEGIES:
        jac = sensaudit.input_jacobian(Flat(), x, strategy=strategy)
        assert torch.equal(jac, torch.zeros(11, 2, 4, dtype=torch.float64))


@strategies
def test_integer_scores_are_refused(strategy, x):
    with pytest.raises(ModelError) as err:
        sensaudit.input_jacobian(Argmax(), x, strategy=strategy)
    assert str(err.value) == ("the model returned torch.int64 scores; expected floating point "
                              "(integer outputs have no gradient)")


def test_wrong_output_shape_is_refused(x):
    with pytest.raises(ModelError) as err:
        sensaudit.input_jacobian(WrongShape(), x)
    assert str(err.value) == ("the model returned shape [1, 4, 1] for 1 rows; expected [1] or "
                              "[1, outputs]")


def test_non_tensor_output_is_refused(x):
    with pytest.raises(ModelError) as err:
        sensaudit.input_jacobian(lambda inp: [1.0] * inp.shape[0], x)
    assert str(err.value) == ("the model returned a list; expected a tensor of scores shaped "
                              "[rows] or [rows, outputs]")


def test_bad_inputs_are_refused(x):
    with pytest.raises(ModelError) as err:
        sensaudit.input_jacobian(Linear(), x[0])
    assert str(err.value) == "expected inputs shaped [rows, features]; got [4]"
    with pytest.raises(ModelError) as err:
        sensaudit.input_jacobian(Linear(), x[:0])
    assert str(err.value) == "no rows to audit"
    with pytest.raises(ValueError) as err:
        sensaudit.input_jacobian(Linear(), x, strategy="backward")
    assert str(err.value) == ("strategy must be one of ('auto', 'reverse', 'reverse-vmap', "
                              "'forward', 'vmap-jacrev'), got 'backward'")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_saved_bytes_per_row_count_what_autograd_keeps_per_row(dtype):
    # Linear saves its input (4 values per row), Tanh its output (16), which the second Linear
    # saves again (the same storage, counted once); the weights do not grow with the rows.
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2)).to(dtype)
    x = torch.randn(100, 4, dtype=dtype)
    assert chunking.saved_bytes_per_row(model, x) == (4 + 16) * x.element_size()
    # Nothing saved (a scaling needs no input to differentiate) or a failing model: 0; the
    # engine's own call reports a failing model.
    assert chunking.saved_bytes_per_row(lambda rows: 2 * rows, x) == 0
    assert chunking.saved_bytes_per_row(lambda rows: rows @ torch.ones(5), x) == 0


@pytest.mark.parametrize("saved,features,outputs,element_size,expected", [
    # 64-256-256-1 float32: 8 MiB / (2,304 saved + 256 Jacobian bytes) = 3,276 rows -> 3,072
    (2304, 64, 1, 4, 3_072),
    (768, 64, 1, 4, 8_192),  # 64-64-64-1 float32: 8 MiB / 1,024 B
    (4608, 64, 1, 8, 1_536),  # 64-256-256-1 float64: 1,638 rows -> 1,536
    (2304, 64, 8, 4, 1_536),  # eight outputs: a 2 KB Jacobian a row; 1,927 rows -> 1,536
    (48, 8, 1, 4, 65_536),  # a tiny model: the most rows
    (0.0, 8, 1, 4, 65_536),  # nothing saved per row
    (9216, 256, 1, 4, 1_024),  # a wide model: 819 rows, raised to the floor of 1,024
    (48, 1024, 8, 4, 512),  # the Jacobian's cap: 2**22 elements / (1,024 x 8)
])
def test_chunk_rows_follow_the_memory_per_row(saved, features, outputs, element_size,
                                               expected):
    assert chunking.rows_for_footprint(saved, features, outputs, element_size) == expected


def test_chunk_rows_are_a_fixed_rule_not_a_timing(monkeypatch):
    # Every call the same rows per chunk, from the model's memory per row: nothing is timed.
    monkeypatch.setattr(chunking, "CHUNKS", chunking.ChunkSizes())
    monkeypatch.setattr(engine, "CHUNKS", chunking.CHUNKS)
    x = torch.randn(70_000, 3, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(3, 64), nn.Tanh(), nn.Linear(64, 1)).double()
    # 8 MiB / ((3 + 64) saved + 3 Jacobian values x 8 bytes) = 14,979 rows -> 14,848
    expected = chunking.rows_for_footprint((3 + 64) * 8, 3, 1, 8)
    assert expected == 14_848
    steps = []
    real = engine._chunk_jacobian

    def spy(model, chunk, strategy, out=None):
        steps.append(chunk.shape[0])
        return real(model, chunk, strategy, out)

    monkeypatch.setattr(engine, "_chunk_jacobian", spy)
    for _ in range(3):
        steps.clear()
        jac = engine.input_jacobian(model, x)
        assert max(steps) == expected
    per_example = engine.input_jacobian(model, x[:7], batch_size=1)
    torch.testing.assert_close(jac[:7], per_example, **CLOSE)
    # A pinned batch size is kept; a call no bigger than the smallest chunk is one chunk.
    steps.clear()
    engine.input_jacobian(model, x, batch_size=1000)
    assert max(steps) == 1000
    steps.clear()
    engine.input_jacobian(model, x[:1_000])
    assert steps == [1_000]


def test_a_model_without_gradient_path_is_refused_on_many_rows(x):
    # The probe finds nothing saved; the engine's own call still refuses the model.
    with pytest.raises(ModelError) as err:
        sensaudit.input_jacobian(Detaching(), x[:1].expand(5_000, -1).clone())
    assert str(err.value) == NO_GRADIENT_PATH


@pytest.mark.parametrize("outputs", [1, 5])
def test_partial_derivatives_are_the_jacobians_columns(outputs):
    # 5 outputs > 2 columns: forward mode over the two columns only; 1 output: reverse mode.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, outputs)).double()
    x = torch.randn(40, 6, dtype=torch.float64)
    full = scores_and_jacobian(model, x)[1]
    columns = [4, 1]
    got = engine.partial_derivatives(model, x, columns)
    torch.testing.assert_close(got, full[:, :, columns], rtol=1e-12, atol=1e-12)
    # and both against central finite differences
    h = 1e-6
    for k, j in enumerate(columns):
        step = torch.zeros(6, dtype=torch.float64)
        step[j] = h
        difference = (model(x + step) - model(x - step)) / (2 * h)
        torch.testing.assert_close(got[:, :, k], difference, rtol=1e-6, atol=1e-8)
