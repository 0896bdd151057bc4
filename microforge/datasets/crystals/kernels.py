"""Numba kernels for the per-pixel work: all rods (or all debris items) of an image in one call.

Why numba: an image has hundreds to thousands of rods; per-rod numpy calls cost more in call
overhead than in arithmetic, and a rod's axis-aligned box is mostly empty for a slanted rod.
Here each rod touches only the pixels of its oriented rectangle (rod + halo + margin) and the
profile along the rod is tabulated once per rod, so a pixel costs a few multiply-adds and table
lookups. The kernels take every random value as input (drawn by numpy), so they are deterministic.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Gaussian terms are cut at CUT sigma (1 % of their peak), or sooner where they fall below
# FAINT gray levels: this bounds the pixels a rod touches.
CUT = 3.0
FAINT = 0.1
# Length (px) of the chunks a rod is rasterised in (see draw_rods).
CHUNK = 32
# exp(-q/2) tabulated on q = x^2 in [0, LUT_MAX): a lookup is cheaper than expf per pixel.
LUT_MAX = np.float32(CUT * CUT)
LUT_SCALE = np.float32(256.0)
GAUSS_LUT = np.exp(-0.5 * (np.arange(int(LUT_MAX * LUT_SCALE) + 1) + 0.5) / LUT_SCALE).astype(np.float32)

# Columns of the per-rod parameter array.
CX, CY, LENGTH, WIDTH, ANGLE, DELTA, GAIN, SHADOW_WIDTH, BIAS, OFFSET, POLARITY, MULT_MIX, PROFILE = range(13)
N_COLUMNS = 13

# Rows of a distortion profile (sampled along u in [-1, 1]): axis warp across the rod (px), and
# factors on width, edge offset, edge strength, and the ragged-edge mask.
WARP, WIDTH_F, OFFSET_F, EDGE_F, RAGGED = range(5)
N_PROFILES = 5

# Columns of the per-rod table along u (see draw_rods).
T_WARP, T_INV_SV, T_BODY, T_CAP, T_OFF, T_INV_SPC, T_EDGE, T_VSUP = range(8)

# End cap: full body up to |u| = CAP_START (fraction of half-length), smoothstep to 0 at |u| = 1.
CAP_START = 0.78
# Body alpha above which a pixel belongs to the rod's support, whose surroundings get the halo.
SUPPORT_ALPHA = 0.12
# Peak of x*exp(-x^2/2) (at x = 1): dividing by it makes the edge pair's gain its peak value.
EDGE_PEAK = 0.60653066


@njit(cache=True, fastmath=True, nogil=True)
def _smooth_cap(a):
    t = min(max((a - CAP_START) / (1.0 - CAP_START), 0.0), 1.0)
    return 1.0 - t * t * (3.0 - 2.0 * t)


@njit(cache=True, fastmath=True, nogil=True)
def _reach(peak):
    """Distance in sigmas at which a Gaussian term of this peak falls to FAINT (at most CUT)."""
    return min(math.sqrt(2.0 * math.log(abs(peak) / FAINT)), CUT) if abs(peak) > FAINT else 0.0


@njit(cache=True, fastmath=True, nogil=True)
def _solve(a, b, lo, hi, xa, xb):
    """Intersect [xa, xb] with {X : lo <= a X + b <= hi}; empty comes back as xa > xb."""
    if abs(a) > 1e-9:
        p = (lo - b) / a
        q = (hi - b) / a
        return max(xa, min(p, q)), min(xb, max(p, q))
    if lo <= b <= hi:
        return xa, xb
    return 1.0, 0.0


@njit(cache=True, fastmath=True, nogil=True)
def _support_end():
    """|u| (fraction of half-length) where the cap falls to SUPPORT_ALPHA, by bisection."""
    lo, hi = CAP_START, 1.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if _smooth_cap(mid) > SUPPORT_ALPHA:
            lo = mid
        else:
            hi = mid
    return lo


@njit(cache=True, fastmath=True, nogil=True)
def draw_rods(img, rods, profiles, taper_strength, taper_power, min_width_ratio, cross_soft_sigma,
              halo_sigma, halo_gain, body_alpha):
    """Add rods to ``img`` (float32 (H, W), in place).

    ``rods``: float64 (n, N_COLUMNS), angle in radians, PROFILE = row of ``profiles`` or -1.
    ``profiles``: float32 (m, N_PROFILES, G) distortion profiles (m may be 0).
    ``body_alpha``: float32 (H, W) that accumulates each rod's body alpha (for rod noise), or a
    (0, 0) array to skip that.
    """
    height, width = img.shape
    lut = GAUSS_LUT
    use_alpha = body_alpha.shape[0] == height and body_alpha.shape[1] == width
    halo_on = halo_sigma > 0.0 and halo_gain != 0.0
    inv_sh = np.float32(1.0 / halo_sigma if halo_on else 0.0)
    pad_u = CUT * halo_sigma + 1.0 if halo_on else 1.0
    n_samples = profiles.shape[2]
    support_end = _support_end()
    vsup_scale = math.sqrt(2.0 * math.log(1.0 / SUPPORT_ALPHA))

    n_max = 2
    for i in range(rods.shape[0]):
        n_max = max(n_max, int(rods[i, LENGTH] + 2.0 * pad_u) + 3)
    # Tables along u, one row per pixel of length, rebuilt for every rod; a row's 8 values are
    # adjacent in memory because a pixel reads all of them.
    tab = np.empty((n_max, 8), np.float32)
    v_lo = np.empty(n_max)  # v-extent of the rod's terms at each u
    v_hi = np.empty(n_max)

    for i in range(rods.shape[0]):
        cx = rods[i, CX]
        cy = rods[i, CY]
        half = 0.5 * rods[i, LENGTH]
        rod_w = rods[i, WIDTH]
        delta = rods[i, DELTA]
        edge_gain = rods[i, GAIN] * rods[i, POLARITY] / EDGE_PEAK
        swm = rods[i, SHADOW_WIDTH]
        # bias scales the bright lobe by (1 - b) and the dark one by (1 + b); which side of the
        # edge pair is bright depends on the polarity.
        b_pos = np.float32(1.0 - rods[i, BIAS] if rods[i, POLARITY] > 0 else 1.0 + rods[i, BIAS])
        b_neg = np.float32(2.0) - b_pos
        offset = rods[i, OFFSET]
        mult_mix = np.float32(rods[i, MULT_MIX])
        prof = int(rods[i, PROFILE])
        c = math.cos(rods[i, ANGLE])
        s = math.sin(rods[i, ANGLE])
        # Halo: the rod's support blurred by halo_sigma, as a plateau of its edge value inside the
        # support (no step at the edge) and a Gaussian fall-off outside. A blurred slab of
        # half-width a is 0.5 * erf(sqrt(2) a / sigma) at its edge.
        halo_amp = np.float32(0.0)
        if halo_on:
            a0 = rod_w * cross_soft_sigma * vsup_scale
            halo_amp = np.float32(delta * halo_gain * 0.5 * math.erf(math.sqrt(2.0) * a0 * inv_sh))

        reach_body = _reach(delta)
        # Edge jitter of ghosts may double the edge's peak.
        reach_edge = _reach(rods[i, GAIN] * (1.0 + abs(rods[i, BIAS])) * (2.0 if prof >= 0 else 1.0))
        reach_halo = _reach(halo_amp)
        u_ext = half + pad_u
        n_u = int(2.0 * u_ext) + 1
        for k in range(n_u):
            u = k + 0.5 - u_ext
            a = abs(u) / half
            un = min(a, 1.0)
            warp = 0.0
            wf = 1.0
            of = 1.0
            ef = 1.0
            rag = 1.0
            if prof >= 0:
                pos = (min(max(u / half, -1.0), 1.0) + 1.0) * 0.5 * (n_samples - 1)
                j = min(int(pos), n_samples - 2)
                fr = pos - j
                warp = profiles[prof, WARP, j] * (1.0 - fr) + profiles[prof, WARP, j + 1] * fr
                wf = profiles[prof, WIDTH_F, j] * (1.0 - fr) + profiles[prof, WIDTH_F, j + 1] * fr
                of = profiles[prof, OFFSET_F, j] * (1.0 - fr) + profiles[prof, OFFSET_F, j + 1] * fr
                ef = profiles[prof, EDGE_F, j] * (1.0 - fr) + profiles[prof, EDGE_F, j + 1] * fr
                rag = profiles[prof, RAGGED, j] * (1.0 - fr) + profiles[prof, RAGGED, j + 1] * fr
            taper = taper_strength * (un if taper_power == 1.0 else un ** taper_power)
            sv = max(max(min_width_ratio, 1.0 - taper) * rod_w * wf * cross_soft_sigma, 1e-3)
            spc = max(sv * swm, 0.6)
            cap = _smooth_cap(a)
            if cap > SUPPORT_ALPHA:
                vsup = sv * math.sqrt(2.0 * math.log(cap / SUPPORT_ALPHA))
            else:  # beyond the tip: minus the distance to the support's end
                vsup = -(a - support_end) * half
            off = offset * of
            tab[k, T_WARP] = warp
            tab[k, T_INV_SV] = 1.0 / sv
            tab[k, T_BODY] = delta * cap
            tab[k, T_CAP] = cap
            tab[k, T_OFF] = off
            tab[k, T_INV_SPC] = 1.0 / spc
            tab[k, T_EDGE] = edge_gain * cap * ef * rag
            tab[k, T_VSUP] = vsup
            ext = max(reach_body * sv, abs(off) + reach_edge * spc) if cap > 0 else 0.0
            if halo_on:
                ext = max(ext, vsup + reach_halo * halo_sigma)
            v_lo[k] = warp - ext
            v_hi[k] = warp + ext

        # Rasterise in chunks along u, each the rectangle u in [k0, k1), v in [va, vb] that holds
        # the chunk's terms: tight around tapered tips and bent ghosts. Each row of a chunk is an
        # x-interval (one pixel wider for rounding); the k test keeps each pixel in one chunk.
        for k0 in range(0, n_u, CHUNK):
            k1 = min(k0 + CHUNK, n_u)
            va = v_lo[k0:k1].min()
            vb = v_hi[k0:k1].max()
            ua = k0 - u_ext
            ub = k1 - u_ext
            y_min = min(s * ua + c * va, s * ua + c * vb, s * ub + c * va, s * ub + c * vb)
            y_max = max(s * ua + c * va, s * ua + c * vb, s * ub + c * va, s * ub + c * vb)
            for y in range(max(int(math.floor(cy + y_min - 0.5)), 0),
                           min(int(math.ceil(cy + y_max - 0.5)), height - 1) + 1):
                yy = y + 0.5 - cy
                # x = cx + X with ua <= c X + s yy <= ub and va <= -s X + c yy <= vb
                xa, xb = _solve(c, s * yy, ua, ub, -1e30, 1e30)
                xa, xb = _solve(-s, c * yy, va, vb, xa, xb)
                if xa > xb:
                    continue
                x0 = max(int(math.ceil(xa + cx - 0.5)) - 1, 0)
                x1 = min(int(math.floor(xb + cx - 0.5)) + 1, width - 1)
                # u (shifted to start at 0) and v at x0, then a step of (c, -s) per pixel. The
                # pixel math is float32: mixing in float64 values doubles its cost.
                xx0 = x0 + 0.5 - cx
                uu = c * xx0 + s * yy + u_ext
                vv = c * yy - s * xx0
                row = img[y]
                for x in range(x0, x1 + 1):
                    k = int(uu)
                    v = np.float32(vv)
                    uu += c
                    vv -= s
                    if k < k0 or k >= k1:
                        continue
                    # Unsigned indices spare numba's negative-index wraparound (~15 % here).
                    ku = np.uintp(k)
                    xu = np.uintp(x)
                    v -= tab[ku, T_WARP]
                    q = v * tab[ku, T_INV_SV]
                    q = q * q
                    val = np.float32(0.0)
                    if q < LUT_MAX:
                        g = lut[np.uintp(q * LUT_SCALE)]
                        val = tab[ku, T_BODY] * g
                        if use_alpha:
                            body_alpha[y, xu] += tab[ku, T_CAP] * g
                    ye = (v - tab[ku, T_OFF]) * tab[ku, T_INV_SPC]
                    q = ye * ye
                    if q < LUT_MAX:
                        val += tab[ku, T_EDGE] * ye * lut[np.uintp(q * LUT_SCALE)] * (b_pos if ye > 0 else b_neg)
                    if halo_on:
                        d = max(abs(v) - tab[ku, T_VSUP], np.float32(0.0)) * inv_sh
                        q = d * d
                        if q < LUT_MAX:
                            val += halo_amp * lut[np.uintp(q * LUT_SCALE)]
                    if mult_mix > 0:
                        row[xu] += val * ((np.float32(1.0) - mult_mix) + mult_mix * row[xu] * np.float32(1.0 / 255.0))
                    else:
                        row[xu] += val


@njit(cache=True, fastmath=True, nogil=True)
def draw_debris(img, items):
    """Add debris to ``img`` (float32 (H, W), in place).

    ``items``: float64 (n, 6) rows ``x, y, delta, size, is_dash, angle``; a disc has radius
    ``size``, a dash is a 1 px line of half-length ``2*size + 1`` through (x, y).
    """
    height, width = img.shape
    for i in range(items.shape[0]):
        x = items[i, 0]
        y = items[i, 1]
        delta = items[i, 2]
        size = int(items[i, 3])
        if items[i, 4] > 0.0:
            half = 2 * size + 1
            c = math.cos(items[i, 5])
            s = math.sin(items[i, 5])
            for t in range(-half, half + 1):
                xi = int(round(x + t * c))
                yi = int(round(y + t * s))
                if 0 <= xi < width and 0 <= yi < height:
                    img[yi, xi] += delta
        else:
            xc = int(x)
            yc = int(y)
            delta32 = np.float32(delta)
            for yi in range(max(yc - size, 0), min(yc + size, height - 1) + 1):
                span = int(math.sqrt(size * size - (yi - yc) * (yi - yc)))
                row = img[yi]
                for xi in range(max(xc - span, 0), min(xc + span, width - 1) + 1):
                    row[xi] += delta32


@njit(cache=True, fastmath=True, nogil=True)
def grain_times_plus(grain, scale, offset):
    """``grain * resize(scale) + resize(offset)`` as float32 (H, W), in one pass and without
    full-size temporaries. ``grain``: uint8 (H, W); ``scale``, ``offset``: float32 coarse grids
    (at least 2x2) resized bilinearly like ``cv2.resize`` (pixel centres aligned, edges clamped).
    """
    h, w = grain.shape
    hc, wc = scale.shape
    out = np.empty((h, w), np.float32)
    x_index = np.empty(w, np.int64)
    x_weight = np.empty(w, np.float32)
    for x in range(w):
        fx = min(max((x + 0.5) * wc / w - 0.5, 0.0), wc - 1.0)
        i = min(int(fx), wc - 2)
        x_index[x] = i
        x_weight[x] = fx - i
    row_s = np.empty(wc, np.float32)
    row_o = np.empty(wc, np.float32)
    for y in range(h):
        fy = min(max((y + 0.5) * hc / h - 0.5, 0.0), hc - 1.0)
        j = min(int(fy), hc - 2)
        wy = np.float32(fy - j)
        for i in range(wc):
            row_s[i] = scale[j, i] + (scale[j + 1, i] - scale[j, i]) * wy
            row_o[i] = offset[j, i] + (offset[j + 1, i] - offset[j, i]) * wy
        for x in range(w):
            i = x_index[x]
            t = x_weight[x]
            a = row_s[i] + (row_s[i + 1] - row_s[i]) * t
            b = row_o[i] + (row_o[i + 1] - row_o[i]) * t
            out[y, x] = grain[y, x] * a + b
    return out
