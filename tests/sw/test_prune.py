"""N:M pruning and N:M-sparse training (sparqforge.sw.prune, which re-exports
sparqforge.sw.nm_masks and sparqforge.sw.sparse_training).

Reference masks, permutations and gradients are computed here with plain loops and stock
PyTorch ops, never with the functions under test.
"""

import copy
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparqforge.sw import digits, digits_pruning, nm_format, nm_masks, prune, sparse_training

PATTERNS = [(1, 2), (2, 4), (1, 4), (2, 8), (4, 8)]

# Linear [out, in] and Conv2d [out, in, kh, kw]; several reduction widths are not a
# multiple of 4 or 8, so the last group is padded.
SHAPES = [(6, 16), (5, 13), (3, 7), (4, 3, 3, 3), (8, 1, 3, 3), (3, 5, 1, 2), (2, 16, 1, 1),
          (5, 2, 2, 3)]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread on a shared machine, and repeat exactly."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# --- independent references ---------------------------------------------------------------------

def ref_conv_matrix(w):
    """[out, kh*kw*in] with column (i_h * kw + i_w) * in + c, by loops."""
    out, cin, kh, kw = w.shape
    mat = torch.zeros(out, kh * kw * cin, dtype=w.dtype)
    for o, c, i, j in itertools.product(range(out), range(cin), range(kh), range(kw)):
        mat[o, (i * kw + j) * cin + c] = w[o, c, i, j]
    return mat


def ref_row_mask(mat, n, m):
    """Per row and group of m columns, keep n by (-|w|, index): largest first, low index wins."""
    rows, width = mat.shape
    mask = torch.zeros(rows, width, dtype=torch.bool)
    for r in range(rows):
        for start in range(0, width, m):
            cols = list(range(start, min(start + m, width)))
            ranked = sorted(cols, key=lambda col: (-abs(float(mat[r, col])), col))
            for col in ranked[:n]:
                mask[r, col] = True
    return mask


def ref_mask(w, n, m):
    """Input-axis mask of a Linear or Conv2d weight, mapped back by loops."""
    if w.dim() == 2:
        return ref_row_mask(w, n, m)
    out, cin, kh, kw = w.shape
    mat_mask = ref_row_mask(ref_conv_matrix(w), n, m)
    mask = torch.zeros(w.shape, dtype=torch.bool)
    for o, c, i, j in itertools.product(range(out), range(cin), range(kh), range(kw)):
        mask[o, c, i, j] = mat_mask[o, (i * kw + j) * cin + c]
    return mask


def ref_output_mask(w, n, m):
    """Output-axis mask: groups of m consecutive output channels for every other index."""
    flat = w.reshape(w.shape[0], -1)
    return ref_row_mask(flat.t().contiguous(), n, m).t().reshape(w.shape)


def weights(shape, seed, *, ties=False):
    gen = torch.Generator().manual_seed(seed)
    if ties:   # few distinct magnitudes, both signs, zeros: exercises the tie rule
        return torch.randint(-3, 4, shape, generator=gen).float()
    return torch.randn(shape, generator=gen)


# --- masks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,m", PATTERNS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("ties", [False, True], ids=["random", "ties"])
def test_mask_keeps_the_n_largest_and_is_nm(shape, n, m, ties):
    w = weights(shape, seed=sum(shape) * 31 + n * 7 + m + ties, ties=ties)
    mask = prune.nm_mask(w, n, m)
    assert mask.dtype == torch.bool and mask.shape == w.shape
    assert torch.equal(mask, ref_mask(w, n, m))
    pruned = (w * mask).numpy()
    matrix = pruned if w.dim() == 2 else ref_conv_matrix(torch.from_numpy(pruned)).numpy()
    assert nm_format.find_violation(matrix, n, m) is None
    # Exactly min(n, group length) kept per group, padded groups included.
    mat_mask = mask if w.dim() == 2 else ref_conv_matrix(mask.float()).bool()
    width = mat_mask.shape[1]
    for start in range(0, width, m):
        counts = mat_mask[:, start:start + m].sum(dim=1)
        assert (counts == min(n, width - start)).all()


def test_mask_tie_break_goes_to_lower_index():
    w = torch.tensor([[1.0, -1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 2.0, -2.0]])
    assert prune.nm_mask(w, 2, 4).int().tolist() == [[1, 1, 0, 0, 1, 1, 0, 0, 1, 1]]
    assert prune.nm_mask(w, 1, 4).int().tolist() == [[1, 0, 0, 0, 1, 0, 0, 0, 1, 0]]


@pytest.mark.parametrize("n,m", PATTERNS)
@pytest.mark.parametrize("shape", [(10, 6), (6, 5, 3, 3), (4, 3, 1, 1), (9, 2, 2, 2)])
def test_output_mask_matches_reference(shape, n, m):
    w = weights(shape, seed=n * 100 + m)
    assert torch.equal(prune.nm_mask_output(w, n, m), ref_output_mask(w, n, m))


def test_mask_errors():
    with pytest.raises(ValueError, match=r"^N:M sparsity requires 0 < N <= M, not 3:2$"):
        prune.nm_mask(torch.ones(2, 4), 3, 2)
    with pytest.raises(ValueError, match=r"Linear \[out, in\] or Conv2d .* not shape \(2, 3, 4\)"):
        prune.nm_mask(torch.ones(2, 3, 4), 2, 4)
    with pytest.raises(ValueError, match="NaN or infinity"):
        prune.nm_mask(torch.tensor([[1.0, float("nan"), 0.0, 2.0]]), 2, 4)
    with pytest.raises(TypeError, match="not list"):
        prune.nm_mask([[1.0, 2.0]], 1, 2)


# --- conv permutation ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 3, 3, 3), (2, 5, 1, 2), (3, 2, 2, 3)])
def test_conv_weight_matrix_order_and_inverse(shape):
    w = weights(shape, seed=1)
    mat = prune.conv_weight_matrix(w)
    assert torch.equal(mat, ref_conv_matrix(w))
    assert torch.equal(prune.conv_weight_from_matrix(mat, w.shape), w)
    assert torch.equal(prune.weight_from_matrix(prune.weight_matrix(w), w.shape), w)
    # It is the matrix of the convolution on im2col columns in (kh, kw, in) order.
    out, cin, kh, kw = shape
    x = weights((2, cin, 5, 6), seed=2)
    cols = F.unfold(x, (kh, kw))                                 # (in, kh, kw) rows
    cols = cols.reshape(2, cin, kh * kw, -1).transpose(1, 2).reshape(2, kh * kw * cin, -1)
    y = (mat @ cols).reshape(2, out, 5 - kh + 1, 6 - kw + 1)
    torch.testing.assert_close(y, F.conv2d(x, w))
    with pytest.raises(ValueError, match=r"must be \[4, 27\], not \(4, 26\)"):
        prune.conv_weight_from_matrix(torch.zeros(4, 26), (4, 3, 3, 3))


# --- pruning and compression --------------------------------------------------------------------

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(24, 10)
        self.norm = nn.LayerNorm(10)

    def forward(self, x):
        return self.norm(self.fc(self.pool(torch.relu(self.conv(x))).flatten(1)))


def test_prune_nm_module_in_place_and_tensor_copy():
    torch.manual_seed(0)
    layer = nn.Conv2d(3, 4, 3)
    original = layer.weight.detach().clone()
    assert prune.prune_nm(layer, 2, 4) is layer
    assert torch.equal(layer.weight.detach(), original * ref_mask(original, 2, 4))
    w = weights((5, 13), seed=4)
    before = w.clone()
    out = prune.prune_nm(w, 1, 4)
    assert torch.equal(w, before)
    assert torch.equal(out, w * ref_mask(w, 1, 4))
    with pytest.raises(TypeError, match="supports nn.Linear and nn.Conv2d, not ReLU"):
        prune.prune_nm(nn.ReLU(), 2, 4)


def test_prune_model_all_layers_and_selection():
    torch.manual_seed(1)
    model = Net()
    dense = copy.deepcopy(model)
    masks = prune.prune_model(model, 2, 8)
    assert list(masks) == ["conv", "fc"]
    for name in masks:
        w = getattr(dense, name).weight.detach()
        assert torch.equal(masks[name], ref_mask(w, 2, 8))
        assert torch.equal(getattr(model, name).weight.detach(), w * masks[name])
    assert torch.equal(model.norm.weight, dense.norm.weight)
    model = copy.deepcopy(dense)
    assert list(prune.prune_model(model, 2, 4, layers=["fc"])) == ["fc"]
    assert torch.equal(model.conv.weight, dense.conv.weight)
    assert list(prune.prune_model(model, 2, 4, layers=[model.conv])) == ["conv"]
    with pytest.raises(ValueError, match=r"no layer named 'fc2'; names are \['conv', 'fc', "):
        prune.prune_model(model, 2, 4, layers=["fc2"])
    with pytest.raises(TypeError, match="Layer 'norm' is a LayerNorm"):
        prune.prune_model(model, 2, 4, layers="norm")
    with pytest.raises(ValueError, match="no nn.Linear or nn.Conv2d"):
        prune.prune_model(nn.Sequential(nn.ReLU()), 2, 4)


@pytest.mark.parametrize("n,m", PATTERNS)
@pytest.mark.parametrize("shape", [(6, 13), (4, 3, 3, 3), (5, 2, 2, 3)])
def test_compress_layer_round_trip(shape, n, m):
    w = weights(shape, seed=n + m)
    pruned = w * ref_mask(w, n, m)
    values, indices = prune.compress_layer(pruned, n, m)
    width = int(np.prod(shape[1:]))
    assert values.shape == indices.shape == (shape[0], -(-width // m) * n)
    # The compressed rows are the conv-permuted matrix's rows.
    np.testing.assert_array_equal(
        nm_format.decompress(values, indices, n, m, in_features=width),
        pruned.numpy() if len(shape) == 2 else ref_conv_matrix(pruned).numpy())
    back = prune.decompress_layer(values, indices, n, m, shape)
    assert back.shape == shape and torch.equal(back, pruned)


def test_compress_layer_of_module_and_unpruned_error():
    torch.manual_seed(2)
    layer = nn.Linear(8, 3)
    with pytest.raises(nm_format.NMFormatError, match=r"^Row 0, group 0 \(inputs 0\.\.3\) has 4 "
                                                      r"nonzeros.*prune it first"):
        prune.compress_layer(layer, 2, 4)
    prune.prune_nm(layer, 2, 4)
    values, indices = prune.compress_layer(layer, 2, 4)
    assert torch.equal(prune.decompress_layer(values, indices, 2, 4, (3, 8)),
                       layer.weight.detach())


# --- BDWP ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (2, 8)])
@pytest.mark.parametrize("batch_shape", [(5,), (2, 3)])
def test_bdwp_linear_forward_and_backward(n, m, batch_shape):
    w = weights((10, 12), seed=3).requires_grad_()
    b = weights((10,), seed=4).requires_grad_()
    x = weights(batch_shape + (12,), seed=5).requires_grad_()
    gy = weights(batch_shape + (10,), seed=6)
    y = prune.bdwp_linear(x, w, b, n, m)
    wd = w.detach()
    w_fwd = wd * ref_mask(wd, n, m)
    w_bwd = wd * ref_output_mask(wd, n, m)
    torch.testing.assert_close(y, x.detach() @ w_fwd.t() + b.detach())
    y.backward(gy)
    gx_expected = gy @ w_bwd
    torch.testing.assert_close(x.grad, gx_expected)
    # The forward (input-axis) weight would give another dX: the check can tell them apart.
    assert not torch.allclose(gx_expected, gy @ w_fwd)
    flat_x, flat_g = x.detach().reshape(-1, 12), gy.reshape(-1, 10)
    torch.testing.assert_close(w.grad, flat_g.t() @ flat_x)          # dense weight gradient
    torch.testing.assert_close(b.grad, flat_g.sum(0))


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 0, 1), (1, 2, 2)])
def test_bdwp_conv2d_forward_and_backward(stride, padding, dilation):
    n, m = 2, 4
    w = weights((6, 5, 3, 3), seed=7).requires_grad_()        # 6 outputs: padded out-groups
    b = weights((6,), seed=8).requires_grad_()
    x = weights((2, 5, 9, 8), seed=9).requires_grad_()
    y = prune.bdwp_conv2d(x, w, b, n, m, stride, padding, dilation)
    gy = weights(tuple(y.shape), seed=10)
    y.backward(gy)
    wd, xd = w.detach(), x.detach()
    w_fwd = wd * ref_mask(wd, n, m)
    w_bwd = wd * ref_output_mask(wd, n, m)
    args = dict(stride=stride, padding=padding, dilation=dilation)
    torch.testing.assert_close(y.detach(), F.conv2d(xd, w_fwd, b.detach(), **args))
    # Expected gradients from stock autograd on stock convolutions with the reference weights.
    xr = xd.clone().requires_grad_()
    (gx_expected,) = torch.autograd.grad(F.conv2d(xr, w_bwd, **args), xr, gy)
    torch.testing.assert_close(x.grad, gx_expected)
    (gx_forward_weight,) = torch.autograd.grad(F.conv2d(xr, w_fwd, **args), xr, gy)
    assert not torch.allclose(gx_expected, gx_forward_weight)
    wr = wd.clone().requires_grad_()
    (gw_expected,) = torch.autograd.grad(F.conv2d(xd, wr, **args), wr, gy)
    torch.testing.assert_close(w.grad, gw_expected)
    torch.testing.assert_close(b.grad, gy.sum((0, 2, 3)))


def test_bdwp_conv_dx_by_im2col_matmul():
    """dX = col2im(W_mat_bwd.T @ dY): the transposed matmul with the out-axis-pruned matrix."""
    w = weights((8, 3, 3, 3), seed=11).requires_grad_()
    x = weights((2, 3, 6, 6), seed=12).requires_grad_()
    y = prune.bdwp_conv2d(x, w, None, 2, 8, padding=1)
    gy = weights(tuple(y.shape), seed=13)
    y.backward(gy)
    w_bwd = w.detach() * ref_output_mask(w.detach(), 2, 8)
    cols = w_bwd.reshape(8, -1).t() @ gy.reshape(2, 8, 36)          # (in, kh, kw) rows
    expected = F.fold(cols, (6, 6), (3, 3), padding=1)
    torch.testing.assert_close(x.grad, expected)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
def test_sparsifier_bdwp_module_paths_match_functional():
    torch.manual_seed(3)
    for conv in (nn.Conv2d(3, 5, 3, padding="same", dilation=2),
                 nn.Conv2d(3, 5, 3, padding=1, padding_mode="reflect"),
                 nn.Conv2d(3, 5, (2, 4), padding="same"),
                 nn.Conv2d(3, 5, 3, padding="valid", stride=2)):
        reference = copy.deepcopy(conv)
        x = torch.randn(2, 3, 7, 7, requires_grad=True)
        with prune.NMSparsifier(conv, 2, 4, method="bdwp"):
            y = conv(x)
        y.backward(torch.ones_like(y))
        # The same convolution with the pruned weight; padding handled by torch itself.
        w_fwd = reference.weight.detach() * ref_mask(reference.weight.detach(), 2, 4)
        with torch.no_grad():
            reference.weight.copy_(w_fwd)
        torch.testing.assert_close(y.detach(), reference(x.detach()))
        assert x.grad is not None and conv.weight.grad is not None


# --- SR-STE -------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(6, 10), (4, 3, 3, 3)])
def test_srste_gradient_is_straight_through_plus_decay(shape):
    decay = 0.25
    w = weights(shape, seed=14).requires_grad_()
    ws = prune.srste_weight(w, 2, 4, decay)
    mask = ref_mask(w.detach(), 2, 4)
    assert torch.equal(ws.detach(), w.detach() * mask)
    g = weights(shape, seed=15)
    ws.backward(g)
    decay_term = decay * (~mask) * w.detach()
    assert decay_term.abs().sum() > 0
    torch.testing.assert_close(w.grad, g + decay_term)
    # Without decay the whole upstream gradient passes, pruned positions included.
    w.grad = None
    prune.srste_weight(w, 2, 4, 0.0).backward(g)
    torch.testing.assert_close(w.grad, g)


def test_sparsifier_srste_linear_gradient():
    torch.manual_seed(4)
    layer = nn.Linear(12, 6)
    x, gy = torch.randn(5, 12), torch.randn(5, 6)
    wd = layer.weight.detach().clone()
    mask = ref_mask(wd, 2, 4)
    sparsifier = prune.NMSparsifier(layer, 2, 4, method="srste", decay=0.1).attach()
    y = layer(x)
    torch.testing.assert_close(y.detach(), x @ (wd * mask).t() + layer.bias.detach())
    y.backward(gy)
    torch.testing.assert_close(layer.weight.grad, gy.t() @ x + 0.1 * (~mask) * wd)
    sparsifier.detach()
    assert prune.NMSparsifier(layer, 2, 4, method="srste").decay == 2e-4
    assert prune.NMSparsifier(layer, 2, 4, method="bdwp").decay == 0.0


def test_bdwp_decay_term():
    w = weights((6, 8), seed=16).requires_grad_()
    x, gy = weights((3, 8), seed=17), weights((3, 6), seed=18)
    prune.bdwp_linear(x, w, None, 2, 4, decay=0.5).backward(gy)
    mask = ref_mask(w.detach(), 2, 4)
    torch.testing.assert_close(w.grad, gy.t() @ x + 0.5 * (~mask) * w.detach())


# --- sparsifier lifecycle -----------------------------------------------------------------------

@pytest.mark.parametrize("method", ["bdwp", "srste"])
@pytest.mark.parametrize("n,m", [(2, 4), (2, 8), (1, 2)])
def test_finalize_gives_exact_nm_plain_model(method, n, m):
    torch.manual_seed(5)
    model = Net()
    x, target = torch.randn(16, 3, 5, 5), torch.randint(0, 10, (16,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    sparsifier = prune.NMSparsifier(model, n, m, method=method).attach()
    assert sparsifier.attached and "forward" in vars(model.fc)
    for _ in range(5):
        optimizer.zero_grad()
        F.cross_entropy(model(x), target).backward()
        optimizer.step()
    assert nm_format.find_violation(model.fc.weight.detach().numpy(), n, m) is not None
    with torch.no_grad():
        y_sparse = model(x)
    dense = {"conv": model.conv.weight.detach().clone(), "fc": model.fc.weight.detach().clone()}
    masks = sparsifier.finalize()
    assert not sparsifier.attached
    assert "forward" not in vars(model.fc) and "forward" not in vars(model.conv)
    for name, module in (("conv", model.conv), ("fc", model.fc)):
        w = module.weight.detach()
        matrix = ref_conv_matrix(w) if w.dim() == 4 else w
        assert nm_format.find_violation(matrix.numpy(), n, m) is None
        assert torch.equal(masks[name], ref_mask(dense[name], n, m))
        assert torch.equal(w, dense[name] * masks[name])
    with torch.no_grad():
        torch.testing.assert_close(model(x), y_sparse)   # the plain model = the sparse forward


def test_attach_detach_and_errors():
    torch.manual_seed(6)
    model = Net()
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        dense_out = model(x)
    sparsifier = prune.NMSparsifier(model, 2, 4)
    with sparsifier:
        with torch.no_grad():
            assert not torch.allclose(model(x), dense_out)
        clone = copy.deepcopy(model)              # an attached copy stays self-contained
        with pytest.raises(RuntimeError, match="already attached"):
            sparsifier.attach()
        with pytest.raises(RuntimeError, match="Layer 'conv' already has its forward replaced"):
            prune.NMSparsifier(model, 2, 4).attach()
    with torch.no_grad():
        assert torch.equal(model(x), dense_out)  # detached: dense again, weights untouched
        clone.fc.weight.zero_()
        assert torch.equal(model(x), dense_out)
    assert torch.equal(clone(x), clone.norm(clone.fc.bias.expand(2, 10)))
    with pytest.raises(ValueError, match=r"method must be one of \['bdwp', 'srste'\], not 'ste'"):
        prune.NMSparsifier(model, 2, 4, method="ste")
    with pytest.raises(ValueError, match="Decay must be a number >= 0, not -1"):
        prune.NMSparsifier(model, 2, 4, method="srste", decay=-1)
    with pytest.raises(ValueError, match=r"^N:M sparsity requires 0 < N <= M, not 0:4$"):
        prune.NMSparsifier(model, 0, 4)
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(ValueError, match="layer '0' has groups=2; use method='srste'"):
        prune.NMSparsifier(grouped, 2, 4, method="bdwp")
    prune.NMSparsifier(grouped, 2, 4, method="srste")


# --- digits -------------------------------------------------------------------------------------

def test_short_finetune_on_digits_beats_one_shot():
    x, y, x_test, y_test = digits.load_digits()
    dense = digits.train(digits.make_model("mlp"), x, y, epochs=20)
    dense_acc = digits.evaluate(dense, x_test, y_test)
    oneshot = copy.deepcopy(dense)
    prune.prune_model(oneshot, 2, 8)
    oneshot_acc = digits.evaluate(oneshot, x_test, y_test)
    assert oneshot_acc < dense_acc - 0.1          # 2:8 one-shot really hurts this model
    for method in prune.METHODS:
        tuned = copy.deepcopy(dense)
        sparsifier = prune.NMSparsifier(tuned, 2, 8, method=method).attach()
        digits.train(tuned, x, y, epochs=4, lr=3e-3)
        digits.train(tuned, x, y, epochs=2, lr=1e-3, seed=1)
        sparsifier.finalize()
        for module in tuned.modules():
            if isinstance(module, nn.Linear):
                assert nm_format.find_violation(module.weight.detach().numpy(), 2, 8) is None
        tuned_acc = digits.evaluate(tuned, x_test, y_test)
        assert tuned_acc > oneshot_acc + 0.1, (method, oneshot_acc, tuned_acc)
        assert tuned_acc > dense_acc - 0.05, (method, dense_acc, tuned_acc)


def test_format_report_table():
    report = {"settings": {"methods": ["bdwp", "srste"]},
              "models": {"mlp": {"dense": 0.95, "dense_finetuned": 0.96, "patterns": {
                  "2:4": {"oneshot": 0.5, "bdwp": 0.9412, "srste": 0.9, "exact_nm": True}}}}}
    lines = digits_pruning.format_report(report).splitlines()
    assert lines[0].split() == ["model", "pattern", "dense", "dense+ft", "one-shot", "bdwp",
                                "srste", "exact", "N:M"]
    assert lines[2].split() == ["mlp", "2:4", "95.00", "96.00", "50.00", "94.12", "90.00", "yes"]


def test_prune_reexports_masks_and_training():
    """The split kept every name callers import from prune, as the same objects."""
    for module in (nm_masks, sparse_training):
        for name in module.__all__:
            assert name in prune.__all__ and getattr(prune, name) is getattr(module, name)
    assert set(prune.__all__) == {"PATTERNS", "prune_nm", "prune_model", "compress_layer",
                                  "decompress_layer", *nm_masks.__all__,
                                  *sparse_training.__all__}
