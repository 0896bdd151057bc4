"""Numba kernels of the CARS renderer: the per-pixel passes, each one loop over the image.

They take every random value as input (drawn by numpy from the sample's generators), so they
are deterministic; ``fastmath`` is off where it could change rounding of the stored values.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# Columns of the follicle table.
CX, CY, RADIUS, A2, P2, A3, P3, A4, P4, THICKNESS, WALL, COLLOID = range(12)
N_COLUMNS = 12

# Pixel classes of the class map (used for the bright-pixel statistics).
INTERSTITIUM, COLLOID_CLASS, WALL_CLASS, DROPLET = 0, 1, 2, 3

# Below this many expected photons Poisson counts are drawn by exact inversion of the CDF; above
# it by the Cornish-Fisher expansion of the Poisson quantile (mean and variance within 1 %).
POISSON_EXACT_BELOW = 12.0
_U32 = 2.0 ** -32


@njit(cache=True, nogil=True)
def place_follicles(xy, radius, packing, n_max):
    """Indices of the candidates kept by greedy dart throwing: a candidate is kept when its centre
    lies at least ``packing * (r_i + r_j)`` from every kept one; stops after ``n_max``."""
    kept = np.empty(min(n_max, xy.shape[0]), np.int64)
    n = 0
    for i in range(xy.shape[0]):
        if n >= n_max:
            break
        ok = True
        for k in range(n):
            j = kept[k]
            lim = packing * (radius[i] + radius[j])
            dx = xy[i, 0] - xy[j, 0]
            dy = xy[i, 1] - xy[j, 1]
            if dx * dx + dy * dy < lim * lim:
                ok = False
                break
        if ok:
            kept[n] = i
            n += 1
    return kept[:n]


@njit(cache=True, fastmath=True, nogil=True)
def rasterize_follicles(size, fol):
    """Label map (int32, 0 = none, i + 1 = follicle i) of the follicle outlines
    ``r(t) = R (1 + sum_k a_k cos(k t + p_k))``; where outlines overlap, a pixel goes to the
    follicle in whose outline it lies deepest (smallest distance / r(t))."""
    label = np.zeros((size, size), np.int32)
    best = np.full((size, size), np.float32(1.0))
    for i in range(fol.shape[0]):
        cx, cy, r = fol[i, CX], fol[i, CY], fol[i, RADIUS]
        reach = r * (1.0 + abs(fol[i, A2]) + abs(fol[i, A3]) + abs(fol[i, A4])) + 1.0
        c2, s2 = math.cos(fol[i, P2]), math.sin(fol[i, P2])
        c3, s3 = math.cos(fol[i, P3]), math.sin(fol[i, P3])
        c4, s4 = math.cos(fol[i, P4]), math.sin(fol[i, P4])
        y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 1, size)
        x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 1, size)
        for y in range(y0, y1):
            dy = y - cy
            for x in range(x0, x1):
                dx = x - cx
                d = math.sqrt(dx * dx + dy * dy)
                if d > reach:
                    continue
                if d > 1e-6:
                    c, s = dx / d, dy / d
                else:
                    c, s = 1.0, 0.0
                # cos/sin of 2t, 3t, 4t by the angle-sum formulas (no atan2 per pixel).
                cc2, ss2 = c * c - s * s, 2.0 * s * c
                cc3, ss3 = cc2 * c - ss2 * s, ss2 * c + cc2 * s
                cc4, ss4 = cc2 * cc2 - ss2 * ss2, 2.0 * ss2 * cc2
                rt = r * (1.0 + fol[i, A2] * (cc2 * c2 - ss2 * s2) + fol[i, A3] * (cc3 * c3 - ss3 * s3)
                          + fol[i, A4] * (cc4 * c4 - ss4 * s4))
                rho = d / rt
                if rho < best[y, x]:
                    best[y, x] = rho
                    label[y, x] = i + 1
    return label


@njit(cache=True, fastmath=True, nogil=True)
def boundary_map(label):
    """uint8 map: 0 on follicle pixels with a 4-neighbour of another label, 1 elsewhere (the
    input of the distance transform that gives the distance into the wall)."""
    h, w = label.shape
    out = np.ones((h, w), np.uint8)
    for y in range(h):
        for x in range(w):
            v = label[y, x]
            if v == 0:
                continue
            if ((x > 0 and label[y, x - 1] != v) or (x < w - 1 and label[y, x + 1] != v)
                    or (y > 0 and label[y - 1, x] != v) or (y < h - 1 and label[y + 1, x] != v)):
                out[y, x] = 0
    return out


@njit(cache=True, fastmath=True, nogil=True)
def compose_tissue(label, depth, fol, coarse, fine, interstitial, interstitial_texture, wall_texture,
                   colloid_texture, offset):
    """Signal (float32) and class map (uint8) of the tissue: interstitium with coarse texture,
    colloid lumens with fine texture, and walls (the band within THICKNESS px of a follicle's
    boundary, anti-aliased over one pixel) with fine texture; plus the non-resonant offset."""
    h, w = label.shape
    signal = np.empty((h, w), np.float32)
    classes = np.empty((h, w), np.uint8)
    for y in range(h):
        for x in range(w):
            v = label[y, x]
            if v == 0:
                s = interstitial * max(1.0 + interstitial_texture * coarse[y, x], 0.0)
                classes[y, x] = INTERSTITIUM
            else:
                i = v - 1
                alpha = min(max(fol[i, THICKNESS] + 0.5 - depth[y, x], 0.0), 1.0)
                colloid = fol[i, COLLOID] * max(1.0 + colloid_texture * fine[y, x], 0.0)
                wall = fol[i, WALL] * max(1.0 + wall_texture * fine[y, x], 0.0)
                s = colloid + alpha * (wall - colloid)
                classes[y, x] = WALL_CLASS if alpha >= 0.5 else COLLOID_CLASS
            signal[y, x] = s + offset
    return signal, classes


@njit(cache=True, fastmath=True, nogil=True)
def draw_droplets(signal, classes, drops):
    """Add droplets (rows x, y, radius, brightness) as anti-aliased discs; their pixels
    (coverage >= 0.5) become class DROPLET."""
    h, w = signal.shape
    for i in range(drops.shape[0]):
        cx, cy, r, b = drops[i, 0], drops[i, 1], drops[i, 2], drops[i, 3]
        y0, y1 = max(int(cy - r - 1.0), 0), min(int(cy + r + 2.0), h)
        x0, x1 = max(int(cx - r - 1.0), 0), min(int(cx + r + 2.0), w)
        for y in range(y0, y1):
            for x in range(x0, x1):
                cover = min(max(r + 0.5 - math.sqrt((x - cx) ** 2 + (y - cy) ** 2), 0.0), 1.0)
                if cover > 0.0:
                    signal[y, x] += b * cover
                    if cover >= 0.5:
                        classes[y, x] = DROPLET


@njit(cache=True, nogil=True)
def _norm_ppf(p):
    """Inverse of the standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9)."""
    a = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
         -3.066479806614716e+01, 2.506628277459239e+00)
    b = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
         -1.328068155288572e+01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549671010364539e+00,
         4.374664141464968e+00, 2.938163982698783e+00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00)
    p = min(max(p, 1e-300), 1.0 - 1e-16)
    if p < 0.02425:
        q = math.sqrt(-2.0 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0)
    if p > 1.0 - 0.02425:
        q = math.sqrt(-2.0 * math.log(1.0 - p))
        return -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0)
    q = p - 0.5
    r = q * q
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0)


@njit(cache=True, nogil=True)
def poisson_from_uniform(lam, u):
    """A Poisson(lam) count from one uniform ``u`` in (0, 1): exact inversion below
    POISSON_EXACT_BELOW, else the Cornish-Fisher quantile lam + sqrt(lam) z + (z^2 - 1) / 6 +
    (z^3 - 7 z) / (72 sqrt(lam)), rounded (z = the normal quantile of u)."""
    if lam <= 0.0:
        return 0.0
    if lam < POISSON_EXACT_BELOW:
        p = math.exp(-lam)
        cdf = p
        k = 0
        while u > cdf and k < 200:
            k += 1
            p *= lam / k
            cdf += p
        return float(k)
    z = _norm_ppf(u)
    root = math.sqrt(lam)
    q = lam + root * z + (z * z - 1.0) / 6.0 + (z * z * z - 7.0 * z) / (72.0 * root)
    return max(math.floor(q + 0.5), 0.0)


@njit(cache=True, nogil=True)
def scan_and_detect(signal, label, classes, shifts, gains, raw, photons_per_unit, adu_per_photon,
                    dark_offset, read_std, saturation):
    """Scan line ``y`` reads the (blurred) signal shifted by ``shifts[y]`` px (edge pixels repeat)
    with gain ``gains[y]``; detection: Poisson photons, ADU, offset, read noise, rounding and
    saturation. ``raw`` (uint64 per pixel) holds two 32-bit uniforms: the high half draws the
    photon count, the low half the read noise. Label and class maps get the same shifts.

    Returns:
        image (uint16), label (uint16), classes (uint8).
    """
    h, w = signal.shape
    image = np.empty((h, w), np.uint16)
    label_out = np.empty((h, w), np.uint16)
    class_out = np.empty((h, w), np.uint8)
    for y in range(h):
        s = shifts[y]
        g = gains[y]
        for x in range(w):
            xs = min(max(x - s, 0), w - 1)
            bits = raw[y, x]
            u_shot = ((bits >> np.uint64(32)) + 0.5) * _U32
            u_read = ((bits & np.uint64(0xFFFFFFFF)) + 0.5) * _U32
            lam = max(signal[y, xs] * g, 0.0) * photons_per_unit
            value = poisson_from_uniform(lam, u_shot) * adu_per_photon + dark_offset
            if read_std > 0.0:
                value += read_std * _norm_ppf(u_read)
            image[y, x] = np.uint16(min(max(math.floor(value + 0.5), 0.0), saturation))
            label_out[y, x] = label[y, xs]
            class_out[y, x] = classes[y, xs]
    return image, label_out, class_out


@njit(cache=True, nogil=True)
def bright_stats(image, classes, max_background_class, percentile, factor):
    """(background level, bright pixel count): the level is the ``lower`` ``percentile`` order
    statistic of the image over pixels of class <= ``max_background_class``; bright pixels (of
    any class) exceed ``factor`` times it. A histogram of the uint16 values, no sort."""
    hist = np.zeros(65536, np.int64)
    n = 0
    h, w = image.shape
    for y in range(h):
        for x in range(w):
            if classes[y, x] <= max_background_class:
                hist[image[y, x]] += 1
                n += 1
    if n == 0:
        return 0.0, 0
    rank = int(percentile / 100.0 * (n - 1))
    level = 0
    seen = 0
    for v in range(65536):
        seen += hist[v]
        if seen > rank:
            level = v
            break
    limit = factor * level
    bright = 0
    for y in range(h):
        for x in range(w):
            if image[y, x] > limit:
                bright += 1
    return float(level), bright


@njit(cache=True, nogil=True)
def label_stats(label, n):
    """Pixel count and coordinate sums (x, y) of labels 0..n."""
    count = np.zeros(n + 1, np.int64)
    sx = np.zeros(n + 1, np.float64)
    sy = np.zeros(n + 1, np.float64)
    h, w = label.shape
    for y in range(h):
        for x in range(w):
            v = label[y, x]
            count[v] += 1
            sx[v] += x
            sy[v] += y
    return count, sx, sy
