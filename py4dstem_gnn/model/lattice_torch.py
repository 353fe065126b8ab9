"""Torch port of the lattice descriptors: the same numbers as the numpy geometry, on any device.

:func:`lattice_descriptors_torch` computes, for a padded batch ``(B, N, 3)`` of spots with its mask,
the ``len(descriptor_names())`` columns of
:func:`py4dstem_gnn.geometry.descriptors.lattice_descriptors`, step for step as
:mod:`py4dstem_gnn.geometry.net` and :mod:`py4dstem_gnn.geometry.symmetry` compute them, so that the
lattice token of the network is measured on the batch's device (no round trip to numpy inside
``forward``). The numpy code stays the reference (``tests/test_lattice_torch.py`` compares them).

What changes in the port is the data layout, not the arithmetic: the numpy code keys spots and
difference vectors into one sorted array per batch and searches it; here every pattern holds at
most ``N`` spots (64 in the network), so the same relations (same bin, neighbouring bin, same
``(h, k)``, symmetry image present) are dense ``(B, n, n)`` comparisons. The candidate peaks, their
tie-breaks (support, own count, bin order), the basis choice, the Lagrange-Gauss reduction, the
three least-squares refinements and every descriptor follow the reference in float64.

Agreement: exact up to float64 rounding (sums taken in another order), except where that rounding
moves a value across a decision boundary (a difference vector on a bin edge, a fractional index at
``index_tolerance``); then one pattern can take another candidate net. ``tests/test_lattice_torch.py``
states the tolerance and ``benchmarks/bench_speed_choices.py`` measures the rate on Bloch-wave
patterns and its effect on the network's predictions.
"""

from __future__ import annotations

import math

import torch

from ..data.kinematic import electron_wavelength
from ..geometry.net import GeometryConfig
from ..geometry.symmetry import LATTICE_TOLERANCE, ROW_DIRECTIONS

__all__ = ["lattice_descriptors_torch"]

_TINY = 1e-12
_KEY_OFF = (1 << 13) - 1  # (h, k) are clipped to +-_KEY_OFF as the numpy keys are
_KEY_W = 1 << 14
_BIN_OFF = 1 << 20
_BIN_W = 1 << 21


def _hypot(v: torch.Tensor) -> torch.Tensor:
    return torch.hypot(v[..., 0], v[..., 1])


def _pad(spots: torch.Tensor, mask: torch.Tensor, cfg: GeometryConfig):
    """Remove the direct beam, sort the diffracted spots by ``|q|`` (as ``net.pad_pointlists``)."""
    B, N, _ = spots.shape
    x = spots.to(torch.float64)
    mask = mask.bool()
    r2 = x[..., 0] ** 2 + x[..., 1] ** 2
    order = torch.sort(torch.where(mask, r2, torch.inf), dim=1, stable=True).indices
    x = torch.gather(x, 1, order.unsqueeze(-1).expand(-1, -1, 3))
    n_real = mask.sum(1)
    r2s = torch.gather(r2, 1, order)
    beam = (n_real > 0) & (r2s[:, 0] <= cfg.beam_tolerance ** 2)
    cols = torch.arange(N, device=spots.device)
    shift = (cols.unsqueeze(0) + beam.long().unsqueeze(1)).clamp(max=N - 1)
    x = torch.gather(x, 1, shift.unsqueeze(-1).expand(-1, -1, 3))
    n_diff = n_real - beam.long()
    real = cols.unsqueeze(0) < n_diff.unsqueeze(1)
    # radial statistics over all diffracted spots (before the cap, as descriptors._radial)
    r_all = _hypot(x[..., :2])
    q_max = torch.where(real, r_all, 0.0).amax(1)
    rs = torch.sort(torch.where(real, r_all, torch.inf), dim=1).values
    width = int(max(1, min(cfg.max_spots, N)))
    x = x[:, :width]
    m = real[:, :width]
    q = torch.where(m.unsqueeze(-1), x[..., :2], 0.0)
    inten = torch.where(m, x[..., 2].clamp(min=0.0), 0.0)
    lo = ((n_diff - 1).clamp(min=0) // 2).clamp(max=N - 1)
    hi = (n_diff // 2).clamp(max=N - 1)
    med = 0.5 * (rs.gather(1, lo[:, None]) + rs.gather(1, hi[:, None])).squeeze(1)
    q_med = torch.where(n_diff > 0, med, 0.0)
    return q, inten, m, n_diff, q_max, q_med


def _candidates(q: torch.Tensor, m: torch.Tensor, cfg: GeometryConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate net vectors ``(B, K, 2)`` and their support (``net._candidates``, dense)."""
    B, N = m.shape
    dev = q.device
    M = min(cfg.n_inner, N)
    pts = torch.cat([q.new_zeros(B, 1, 2), q[:, :M]], 1)
    pm = torch.cat([m.new_ones(B, 1), m[:, :M]], 1)
    iu, ju = torch.triu_indices(M + 1, M + 1, 1, device=dev)
    d = pts[:, ju] - pts[:, iu]  # (B, P, 2)
    ok = pm[:, iu] & pm[:, ju]
    full = _hypot(pts.unsqueeze(2) - pts.unsqueeze(1))
    valid2 = pm.unsqueeze(2) & pm.unsqueeze(1) & ~torch.eye(M + 1, dtype=torch.bool, device=dev)
    nn = torch.where(valid2, full, torch.inf).amin(2)
    n_pts = pm.sum(1)
    nn_sorted = torch.sort(nn, 1).values
    scale = nn_sorted.gather(1, ((n_pts - 1).clamp(min=0) // 2)[:, None]).squeeze(1)
    scale = torch.where(torch.isfinite(scale), scale, 0.1)
    h = (cfg.grid_fraction * scale).clamp(cfg.grid_min, cfg.grid_max)
    d = torch.where((d[..., 0] < 0).unsqueeze(-1), -d, d)
    edge = ok & (d[..., 0] < 2 * h[:, None])
    d = torch.cat([d, -d], 1)  # (B, 2P, 2): each pair, then its mate where near the y axis
    ok = torch.cat([ok, edge], 1)
    hb = h[:, None]
    ix = torch.floor(d[..., 0] / hb).long()
    iy = torch.floor(d[..., 1] / hb).long()
    # bins keyed (ix, iy) and sorted per pattern, as the reference keys them; a 3 x 3 neighbourhood
    # is three runs of consecutive keys, found by binary search
    big = torch.iinfo(torch.long).max
    key = torch.where(ok, (ix + _BIN_OFF) * _BIN_W + (iy + _BIN_OFF), big)
    sk, order = torch.sort(key, dim=1, stable=True)
    sd = d.gather(1, order.unsqueeze(-1).expand(-1, -1, 2))
    sok = sk < big
    P2 = sk.shape[1]
    csum = torch.cat([q.new_zeros(B, 1, 2), torch.cumsum(torch.where(sok.unsqueeze(-1), sd, 0.0), 1)], 1)

    def run(lo_key, hi_key):
        lo = torch.searchsorted(sk, lo_key, side="left")
        hi = torch.searchsorted(sk, hi_key, side="right")
        return lo, hi

    def gsum(idx):
        return csum.gather(1, idx.unsqueeze(-1).expand(-1, -1, 2))

    ksafe = torch.where(sok, sk, 0)
    lo0, hi0 = run(ksafe, ksafe)
    cnt = hi0 - lo0
    c3 = torch.zeros_like(cnt)
    v = torch.zeros_like(sd)
    for ddx in (-1, 0, 1):
        lo, hi = run(ksafe + ddx * _BIN_W - 1, ksafe + ddx * _BIN_W + 1)
        c3 = c3 + (hi - lo)
        v = v + gsum(hi) - gsum(lo)
    v = v / c3.clamp(min=1).unsqueeze(-1)
    # a bin is a peak if its (smoothed count, own count, smaller key) beats each neighbouring bin's
    idx = torch.arange(P2, device=dev)
    peak = sok & ((idx == 0) | (sk != torch.roll(sk, 1, 1)))
    for ddx in (-1, 0, 1):
        for ddy in (-1, 0, 1):
            if not (ddx or ddy):
                continue
            kn = ksafe + ddx * _BIN_W + ddy
            pos = torch.searchsorted(sk, kn, side="left").clamp(max=P2 - 1)
            hit = sk.gather(1, pos) == kn
            c3n, cntn = c3.gather(1, pos), cnt.gather(1, pos)
            wins = (c3 > c3n) | (c3 == c3n) & ((cnt > cntn) | (cnt == cntn) & ((ddx > 0) or (ddx == 0 and ddy > 0)))
            peak &= ~hit | wins
    c3 = c3.to(q.dtype)
    length = _hypot(v)
    peak &= length > 2 * hb
    # per pattern: best support first, shorter first, then bin order (already the order here)
    order = torch.sort(torch.where(peak, length, torch.inf), dim=1, stable=True).indices
    sc = torch.where(peak, -c3, torch.inf).gather(1, order)
    order = order.gather(1, torch.sort(sc, dim=1, stable=True).indices)
    K = cfg.n_candidates
    K2 = min(2 * K, P2)
    top = order[:, :K2]
    cv = v.gather(1, top.unsqueeze(-1).expand(-1, -1, 2))
    cs = torch.where(peak.gather(1, top), c3.gather(1, top), 0.0)
    cv = torch.where((cs > 0).unsqueeze(-1), cv, 0.0)
    flip = (cv[..., 0] < 0) | ((cv[..., 0] == 0) & (cv[..., 1] < 0))
    cv = torch.where(flip.unsqueeze(-1), -cv, cv)
    dd = cv.unsqueeze(2) - cv.unsqueeze(1)
    close = (dd[..., 0] ** 2 + dd[..., 1] ** 2) < (2 * h[:, None, None]) ** 2
    earlier = torch.tril(torch.ones(K2, K2, dtype=torch.bool, device=dev), -1)
    dup = (close & earlier & (cs.unsqueeze(1) > 0)).any(2)
    keep = (cs > 0) & ~dup
    rank = torch.cumsum(keep.long(), 1) - 1
    sel = keep & (rank < K)
    out = q.new_zeros(B, K + 1, 2)
    sup = q.new_zeros(B, K + 1)
    slot = torch.where(sel, rank, K)  # unselected go to a scratch column
    out.scatter_(1, slot.unsqueeze(-1).expand(-1, -1, 2), torch.where(sel.unsqueeze(-1), cv, 0.0))
    sup.scatter_(1, slot, torch.where(sel, cs, 0.0))
    return out[:, :K], sup[:, :K]


def _inverse_2x2(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    det = m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]
    safe = torch.where(det.abs() > _TINY, det, 1.0)
    inv = torch.stack([torch.stack([m[..., 1, 1], -m[..., 0, 1]], -1),
                       torch.stack([-m[..., 1, 0], m[..., 0, 0]], -1)], -2) / safe[..., None, None]
    return inv, det


def _choose_basis(q, inten, m, cand, sup, cfg: GeometryConfig):
    """Best candidate pair per pattern (``net._choose_basis``)."""
    B, K, _ = cand.shape
    iu, ju = torch.triu_indices(K, K, 1, device=q.device)
    basis = torch.stack([cand[:, iu], cand[:, ju]], 2)  # (B, P, 2, 2)
    ok = (sup[:, iu] > 0) & (sup[:, ju] > 0)
    inv, det = _inverse_2x2(basis)
    la, lb = _hypot(cand[:, iu]), _hypot(cand[:, ju])
    area = det.abs()
    ok &= area > cfg.min_sine * la * lb
    E = min(cfg.n_eval, q.shape[1])
    qx, qy, me = q[:, None, :E, 0], q[:, None, :E, 1], m[:, :E]
    f0 = qx * inv[:, :, 0, 0, None] + qy * inv[:, :, 1, 0, None]
    f1 = qx * inv[:, :, 0, 1, None] + qy * inv[:, :, 1, 1, None]
    tol = cfg.index_tolerance
    on = ((f0 - torch.round(f0)).abs() < tol) & ((f1 - torch.round(f1)).abs() < tol) & me[:, None, :]
    ie = inten[:, :E]
    imax = ie.amax(1, keepdim=True).clamp(min=_TINY)
    w = torch.where(me, (ie / imax) ** cfg.weight_power, 0.0) if cfg.weight_power else me.to(q.dtype)
    slack = cfg.fraction_slack * w.sum(1)
    f = torch.where(on, w.unsqueeze(1), 0.0).sum(-1)
    f = torch.where(ok, f, -1.0)
    best = f.amax(1, keepdim=True)
    elig = ok & (f >= best - slack[:, None])
    amax = torch.where(elig, area, 0.0).amax(1, keepdim=True)
    elig2 = elig & (area >= 0.9 * amax)
    s = la + lb
    key = torch.where(elig2, f * 1e3 - s / s.clamp(min=_TINY).amax(1, keepdim=True), -torch.inf)
    p = torch.argmax(key, 1)
    valid = torch.isfinite(key.gather(1, p[:, None]).squeeze(1))
    return basis[torch.arange(B, device=q.device), p], valid


def gauss_reduce_torch(a: torch.Tensor, b: torch.Tensor, max_iter: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Lagrange-Gauss reduction of ``(B, 2)`` bases (``cell.gauss_reduce``, same conventions)."""
    cross = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    la, lb = _hypot(a), _hypot(b)
    active = (cross.abs() > 1e-9 * (la * lb).clamp(min=_TINY)) & (torch.minimum(la, lb) > 1e-6)
    check = a.device.type == "cpu"
    for _ in range(max_iter):
        if check and not bool(active.any()):
            break
        xx, yy = (a * a).sum(1), (b * b).sum(1)
        swap = active & (yy < xx * (1 - 1e-12))
        x = torch.where(swap[:, None], b, a)
        y = torch.where(swap[:, None], a, b)
        mu = torch.round((x * y).sum(1) / (x * x).sum(1).clamp(min=_TINY))
        mu = torch.where(active, mu, 0.0)
        y = y - mu[:, None] * x
        a, b = torch.where(active[:, None], x, a), torch.where(active[:, None], y, b)
        active = active & ((mu != 0) | swap)
    flip = (a * b).sum(1) < 0
    return a, torch.where(flip[:, None], -b, b)


def _index(q, basis, offset):
    inv, _ = _inverse_2x2(basis)
    x = q[..., 0] - offset[:, 0, None]
    y = q[..., 1] - offset[:, 1, None]
    frac = torch.stack([x * inv[:, 0, 0, None] + y * inv[:, 1, 0, None],
                        x * inv[:, 0, 1, None] + y * inv[:, 1, 1, None]], -1)
    hk = torch.round(frac)
    res = (frac - hk).abs()
    return frac, hk, torch.maximum(res[..., 0], res[..., 1])


def _least_squares(q, hk, on, basis, offset, ridge_offset: float = 1.0):
    w = on.to(q.dtype)
    X = torch.stack([hk[..., 0] * w, hk[..., 1] * w, w], -1)  # (B, N, 3)
    XtX = (X.unsqueeze(-1) * X.unsqueeze(-2)).sum(1)
    XtY = (X.unsqueeze(-1) * q.unsqueeze(-2)).sum(1)
    prev = torch.cat([basis, offset[:, None, :]], 1)
    scale = (XtX[:, 0, 0] + XtX[:, 1, 1]).clamp(min=1.0)
    lam = torch.stack([1e-6 * scale, 1e-6 * scale, torch.full_like(scale, ridge_offset)], 1)
    A = XtX + torch.diag_embed(lam)
    sol = torch.linalg.solve(A, XtY + lam[:, :, None] * prev)
    return sol[:, :2], sol[:, 2]


def _fit_nets(q, inten, m, cfg: GeometryConfig) -> dict[str, torch.Tensor]:
    """``net.fit_nets`` on the sorted, padded spots."""
    B, N = m.shape
    cand, sup = _candidates(q, m, cfg)
    basis, valid = _choose_basis(q, inten, m, cand, sup, cfg)
    basis = torch.stack(gauss_reduce_torch(basis[:, 0], basis[:, 1]), 1)
    offset = q.new_zeros(B, 2)
    r = _hypot(q)
    E = min(cfg.n_eval, N)
    r_eval = torch.where(m[:, :E], r[:, :E], 0.0).amax(1)
    for lim in (1.0, 2.0, None):
        frac, hk, res = _index(q, basis, offset)
        inside = (r <= lim * r_eval[:, None] + _TINY) if lim is not None else m
        on = m & (res < cfg.index_tolerance) & inside & valid[:, None]
        basis, offset = _least_squares(q, hk, on, basis, offset)
        basis = torch.stack(gauss_reduce_torch(basis[:, 0], basis[:, 1]), 1)
    frac, hk, res = _index(q, basis, offset)
    on = m & (res < cfg.index_tolerance) & valid[:, None]
    hkm = hk * on[..., None]
    M2 = (hkm.unsqueeze(-1) * hkm.unsqueeze(-2)).sum(1)
    det = M2[:, 0, 0] * M2[:, 1, 1] - M2[:, 0, 1] ** 2
    found = valid & (on.sum(1) >= 3) & (det > 0.5)
    # one systematic row (net._row_fit)
    S = ((q * m[..., None]).unsqueeze(-1) * q.unsqueeze(-2)).sum(1)
    ev, evec = torch.linalg.eigh(S)
    n = m.sum(1).clamp(min=1)
    rms_perp = torch.sqrt(ev[:, 0].clamp(min=0) / n)
    rms_all = torch.sqrt(ev.sum(1).clamp(min=0) / n)
    is_row = (m.sum(1) >= 2) & (rms_perp <= cfg.row_tolerance * rms_all.clamp(min=_TINY))
    is_row &= ~found | (det <= 0.5)
    found &= ~is_row
    s = ((inten * on) * (q * (basis[:, 0] + basis[:, 1]).unsqueeze(1)).sum(-1)).sum(1)
    basis = basis * torch.where(s < 0, -1.0, 1.0)[:, None, None]
    frac, hk, res = _index(q, basis, offset)
    near = hk[..., 0:1] * basis[:, None, 0] + hk[..., 1:2] * basis[:, None, 1] + offset[:, None, :]
    dist = _hypot(q - near)
    on = m & (res < cfg.index_tolerance) & found[:, None]
    # row vector (net._row_vector): only its length enters the descriptors
    direction = evec[:, :, 1]
    t = (q * direction.unsqueeze(1)).sum(-1)
    at = torch.where(m & (t.abs() > 2 * cfg.grid_min), t.abs(), torch.inf)
    t0 = at.amin(1)
    t0 = torch.where(torch.isfinite(t0), t0, 0.0)
    ratio = t / t0.clamp(min=_TINY)[:, None]
    nr = torch.round(ratio)
    okr = m & ((ratio - nr).abs() < cfg.index_tolerance) & (nr != 0)
    num = (nr * okr * t).sum(1)
    den = (nr * okr * nr).sum(1)
    spacing = torch.where(den > 0, num / den.clamp(min=_TINY), t0)
    row_a = direction * spacing[:, None]
    a = torch.where(found[:, None], basis[:, 0], torch.where(is_row[:, None], row_a, 0.0))
    b = torch.where(found[:, None], basis[:, 1], 0.0)
    offset = torch.where(found[:, None], offset, 0.0)
    return dict(a=a, b=b, offset=offset, found=found, is_row=is_row, hk=hk.long(), frac=frac, on=on,
                residual=torch.where(m, dist, 0.0))


def _op_matrices(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(B, 10, 2, 2)`` matrices of ``symmetry.SYMMETRY_OPERATIONS`` (column-vector convention)."""
    B = a.shape[0]
    mats = []
    for n in (2, 3, 4, 6):
        t = 2 * math.pi / n
        rot = a.new_tensor([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        mats.append(rot.expand(B, 2, 2))
    for v, perp in ((a, False), (a, True), (b, False), (b, True), (a + b, False), (a - b, False)):
        phi = torch.atan2(v[:, 1], v[:, 0]) + (math.pi / 2 if perp else 0.0)
        c, s = torch.cos(2 * phi), torch.sin(2 * phi)
        mats.append(torch.stack([torch.stack([c, s], -1), torch.stack([s, -c], -1)], -2))
    return torch.stack(mats, 1)


def _symmetry(q, m, amp, fit) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Intensity residuals, centring, rows and fill (``symmetry.symmetry_residuals``, ``net_statistics``)."""
    B, N = m.shape
    on, found = fit["on"], fit["found"]
    r = _hypot(q)
    r_cut = 0.97 * torch.where(on, r, 0.0).amax(1)
    hk = fit["hk"].clamp(-_KEY_OFF, _KEY_OFF)
    hkey = (hk[..., 0] + _KEY_OFF) * _KEY_W + (hk[..., 1] + _KEY_OFF)
    idx = torch.arange(N, device=q.device)
    # the distinct indexed spots: brightest of each (h, k), the first on ties (symmetry._IndexedSet)
    brighter = (amp.unsqueeze(1) > amp.unsqueeze(2)) | ((amp.unsqueeze(1) == amp.unsqueeze(2)) & (idx[None, None] < idx[None, :, None]))
    distinct = on & ~((hkey.unsqueeze(2) == hkey.unsqueeze(1)) & on.unsqueeze(1) & brighter).any(2)
    big = torch.iinfo(torch.long).max
    tab_key, tab_pos = torch.sort(torch.where(distinct, hkey, big), dim=1)
    tab_amp = amp.gather(1, tab_pos)
    use = on & (r <= r_cut[:, None])
    a, b = fit["a"], fit["b"]
    basis = torch.stack([a, b], 1)
    inv, _ = _inverse_2x2(basis)
    T = torch.einsum("bij,bokj,bkl->boil", basis, _op_matrices(a, b), inv)
    Ti = torch.round(T)
    invariant = ((T - Ti).abs().amax((2, 3)) < LATTICE_TOLERANCE) & found[:, None]
    Ti = Ti.long()
    h, k = fit["hk"][..., 0], fit["hk"][..., 1]
    a_use = amp * use
    resid = []
    for o in range(Ti.shape[1]):
        t = Ti[:, o, :, :, None]
        ih = (h * t[:, 0, 0] + k * t[:, 1, 0]).clamp(-_KEY_OFF, _KEY_OFF)
        ik = (h * t[:, 0, 1] + k * t[:, 1, 1]).clamp(-_KEY_OFF, _KEY_OFF)
        ikey = (ih + _KEY_OFF) * _KEY_W + (ik + _KEY_OFF)
        pos = torch.searchsorted(tab_key, ikey).clamp(max=N - 1)
        a_img = torch.where(tab_key.gather(1, pos) == ikey, tab_amp.gather(1, pos), 0.0) * use
        num = (a_use - a_img).abs().sum(1)
        den = (a_use + a_img).sum(1)
        resid.append(torch.where(invariant[:, o] & (den > 0), num / den.clamp(min=_TINY), 1.0))
    sym = torch.stack(resid, 1)
    dist_in = distinct & (r <= r_cut[:, None])
    w = amp * dist_in
    wsum = w.sum(1).clamp(min=_TINY)
    centring = torch.stack([(w * (h % 2 == 0)).sum(1), (w * (k % 2 == 0)).sum(1), (w * ((h + k) % 2 == 0)).sum(1)], 1)
    centring = torch.where(found[:, None], centring / wsum[:, None], 0.0)
    odd, even = [], []
    for th, tk in ROW_DIRECTIONS:
        on_row = dist_in & (h * tk - k * th == 0)
        n = torch.div(h * th + k * tk, th * th + tk * tk, rounding_mode="floor")
        step = _hypot(th * a + tk * b)
        n_max = torch.floor(r_cut / step.clamp(min=_TINY))
        e_odd, e_even = 2 * torch.ceil(n_max / 2), 2 * torch.floor(n_max / 2)
        p_odd = (on_row & (n % 2 != 0)).sum(1)
        p_even = (on_row & (n % 2 == 0) & (n != 0)).sum(1)
        odd.append(torch.where(e_odd > 0, p_odd / e_odd.clamp(min=1), 0.0))
        even.append(torch.where(e_even > 0, p_even / e_even.clamp(min=1), 0.0))
    fnd = found[:, None]
    area = (a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).abs()
    expected = math.pi * r_cut ** 2 / area.clamp(min=_TINY) - 1
    fill = torch.where(found & (expected > 0), dist_in.sum(1) / expected.clamp(min=1), 0.0)
    stats = dict(centring=centring, fill=fill.clamp(0.0, 2.0), r_cut=r_cut,
                 row_odd=torch.where(fnd, torch.stack(odd, 1).clamp(0, 1), 0.0),
                 row_even=torch.where(fnd, torch.stack(even, 1).clamp(0, 1), 0.0))
    return sym, stats


def _off_net(q, m, amp, fit, cfg: GeometryConfig, coherence_tolerance: float = 0.1, min_layer_spots: int = 3,
             max_off: int = 32) -> list[torch.Tensor]:
    """``frac_off, amp_off, layer_found, layer_spots, layer_radius, layer_spacing, layer_repeat``."""
    B, N = m.shape
    off = m & ~fit["on"]
    n = m.sum(1).clamp(min=1)
    n_off = off.sum(1)
    frac_off = n_off / n
    amp_off = (amp * off).sum(1) / amp.sum(1).clamp(min=_TINY)
    L = min(max_off, N)
    order = torch.sort((~off).to(torch.uint8), dim=1, stable=True).indices[:, :L]
    sel = off.gather(1, order) & fit["found"][:, None]
    phi = fit["frac"].gather(1, order.unsqueeze(-1).expand(-1, -1, 2))
    phi = phi - torch.round(phi)
    r = _hypot(q).gather(1, order)
    dphi = phi.unsqueeze(2) - phi.unsqueeze(1)
    dphi = (dphi - torch.round(dphi)).abs().amax(-1)
    adj = (dphi < coherence_tolerance) & sel.unsqueeze(2) & sel.unsqueeze(1)
    best = torch.argmax(adj.sum(2), 1)
    group = adj[torch.arange(B, device=q.device), best]
    n_layer = group.sum(1)
    found = n_layer >= min_layer_spots
    r_rms = torch.sqrt((r ** 2 * group).sum(1) / n_layer.clamp(min=1))
    H = electron_wavelength(cfg.voltage) * r_rms ** 2 / 2
    return [frac_off, amp_off, found, n_layer, torch.where(found, r_rms, 0.0), torch.where(found, H, 0.0),
            torch.where(found & (H > 0), 1.0 / H.clamp(min=_TINY), 0.0)]


def _net_type_scores(a_len, b_len, gamma, found, cfg: GeometryConfig):
    """``cell.net_type_scores``: scores ``(B, 5)`` and the one-hot hard label."""
    rt, at = cfg.ratio_tolerance, cfg.angle_tolerance_deg
    r = b_len / a_len.clamp(min=_TINY)
    cg = torch.cos(torch.deg2rad(gamma))
    d_rhomb = (r - 1).abs() / rt
    d_rect = (90 - gamma).abs() / at
    d_cent = torch.minimum(d_rhomb, (2 * r * cg - 1).abs() / rt)
    d_square = torch.maximum(d_rhomb, d_rect)
    d_hex = torch.maximum(d_rhomb, (gamma - 60).abs() / at)

    def score(d):
        return torch.exp(-0.5 * d ** 2)

    s_rect, s_cent = score(d_rect), score(d_cent)
    scores = torch.stack([1 - torch.maximum(s_rect, s_cent), s_rect, s_cent, score(d_square), score(d_hex)], 1)
    label = torch.zeros_like(r, dtype=torch.long)
    for code, d in ((2, d_cent), (1, d_rect), (3, d_square), (4, d_hex)):
        label = torch.where(d <= 1, code, label)
    onehot = torch.nn.functional.one_hot(label, 5).to(r.dtype) * found[:, None]
    return torch.where(found[:, None], scores, 0.0), onehot


def _descriptors(spots: torch.Tensor, mask: torch.Tensor, cfg: GeometryConfig) -> torch.Tensor:
    q, inten, m, n_spots, q_max, q_med = _pad(spots, mask, cfg)
    fit = _fit_nets(q, inten, m, cfg)
    found, is_row, on = fit["found"], fit["is_row"], fit["on"]
    a, b = fit["a"], fit["b"]
    a_len = torch.where(found | is_row, _hypot(a), 0.0)
    b_len = torch.where(found, _hypot(b), 0.0)
    c = (a * b).sum(1) / (_hypot(a) * _hypot(b)).clamp(min=_TINY)
    gamma = torch.where(found, torch.rad2deg(torch.arccos(c.clamp(-1, 1))), 0.0)
    scores, onehot = _net_type_scores(_hypot(a), _hypot(b), gamma, found, cfg)
    imax = torch.where(m, inten, 0.0).amax(1, keepdim=True)
    amp = torch.sqrt(inten / imax.clamp(min=_TINY)) * m
    n = m.sum(1).clamp(min=1)
    n_idx = on.sum(1)
    rms = torch.sqrt((fit["residual"] ** 2 * on).sum(1) / n_idx.clamp(min=1))
    frac = n_idx / n
    quality = frac * (1 - rms / (cfg.index_tolerance * _hypot(a)).clamp(min=_TINY)).clamp(0, 1)
    sym, st = _symmetry(q, m, amp, fit)
    fl = found.to(q.dtype)
    area = (a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).abs() * fl

    def inv(x):
        return torch.where(x > _TINY, 1.0 / x.clamp(min=_TINY), 0.0)

    cols = [
        n_spots, fl, is_row, a_len, b_len, gamma, torch.where(found, b_len / a_len.clamp(min=_TINY), 0.0),
        torch.where(found, torch.cos(torch.deg2rad(gamma)), 0.0), area, inv(a_len), inv(b_len), inv(area),
        *scores.unbind(1), *onehot.unbind(1),
        torch.where(found, frac, 0.0),
        torch.where(found, (amp * on).sum(1) / amp.sum(1).clamp(min=_TINY), 0.0),
        torch.where(found, rms, 0.0),
        torch.where(a_len > 0, torch.where(found, rms, 0.0) / a_len.clamp(min=_TINY), 0.0),
        torch.where(found, quality, 0.0), _hypot(fit["offset"]), st["fill"], st["r_cut"] * fl, q_max, q_med,
        *sym.unbind(1), *st["centring"].unbind(1), *st["row_odd"].unbind(1), *st["row_even"].unbind(1),
        *_off_net(q, m, amp, fit, cfg),
    ]
    X = torch.stack([col.to(q.dtype) for col in cols], 1)
    return torch.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0)


def lattice_descriptors_torch(
    spots: torch.Tensor,
    mask: torch.Tensor,
    config: GeometryConfig | None = None,
    *,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Lattice descriptors of a padded batch, on its device (port of ``geometry.lattice_descriptors``).

    Parameters
    ----------
    spots : torch.Tensor
        ``(B, N, 3)`` ``qx, qy`` (1/Å), intensity. A spot within ``beam_tolerance`` of ``q = 0``
        (the nearest one) is taken as the direct beam and left out, as the numpy code does.
    mask : torch.Tensor
        ``(B, N)`` bool, True for real spots (any order, padding anywhere).
    config : GeometryConfig, optional
        Tolerances of the net reduction (the numpy defaults).
    chunk_size : int
        Patterns per step: the dense pair comparisons take ``O(chunk_size * 272**2)`` memory.

    Returns
    -------
    torch.Tensor
        ``(B, len(descriptor_names()))`` float32, finite, on ``spots.device``.
    """
    cfg = config or GeometryConfig()
    if spots.ndim != 3 or spots.shape[-1] != 3 or mask.shape != spots.shape[:2]:
        raise ValueError(f"expected spots (B, N, 3) and mask (B, N); got {tuple(spots.shape)} and {tuple(mask.shape)}")
    spots = spots.detach()
    mask = mask.detach().bool()
    if spots.shape[1] == 0:
        spots = spots.new_zeros(spots.shape[0], 1, 3)
        mask = mask.new_zeros(mask.shape[0], 1)
    if spots.shape[0] == 0:
        from ..geometry.descriptors import descriptor_names

        return spots.new_zeros(0, len(descriptor_names()), dtype=torch.float32)
    out = [_descriptors(spots[s:s + chunk_size], mask[s:s + chunk_size], cfg)
           for s in range(0, spots.shape[0], max(1, chunk_size))]
    return torch.cat(out).float()
