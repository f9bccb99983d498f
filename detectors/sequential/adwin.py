"""ADWIN (adaptive windowing) change detector, batched, with River's decisions.

River's ADWIN (Bifet & Gavalda 2007, the ADWIN2 exponential histogram) keeps
every value since its last reset, compressed into buckets: level ``i`` holds
at most ``max_buckets`` summaries of ``2**i`` consecutive values; when a level
overflows its two oldest summaries merge into one of the next level.  Every
``clock`` values it tries every bucket boundary as a cut ``W0 | W1`` and
signals a change when ``|mean(W0) - mean(W1)|`` exceeds a Hoeffding/Bernstein
bound.  After a detection River's wrapper throws the whole window away.

River 0.26 runs this in Rust, value by value.  Here a batch is one call into
a compiled loop (numba, ``cache=True``) that produces River's floats -- the
running width, total and variance, every bucket total, and at a check every
cut mean -- with the same operations in the same order (logarithms through
libm like Rust's ``ln``), so the decisions are identical.  It is faster
because it arranges the work differently, in passes over a chunk of the
batch:

1. **Total and variance.**  River's running total and variance are two
   chains of additions (each waits for the previous one), with two divisions
   per value between them.  In blocks of 128 values, the divisions run as one
   vectorised pass, and the variance chain of a block runs in the same loop
   as the total chain of the next, so the two chains overlap.
2. **Buckets.**  Which summaries merge depends only on how many a level has
   received, never on the values: the ``k``-th merge of a level always adds
   its summaries ``2k`` and ``2k + 1``.  So a chunk's merges are computed level
   by level as pairwise sums into per-level logs, and the buckets at any
   moment are a slice of each log, found by counting.
3. **Checks.**  Each check first runs *screens* that prove, with products
   only, that River's inequality holds at no cut; River's exact tests run
   only when they cannot (near or after a change), and for the last check of
   a batch, whose ratio is reported.  The screens cover a superset of the
   cuts: the cut list, rebuilt every few checks from the levels that changed,
   plus every position since (a cut can only appear at a new position; one a
   merge has removed is just an extra constraint).  With ``m = 1/a + 1/b``,
   ``a, b = n0, n1 - mwl + 1``, River fires at a cut when
   ``|u0/n0 - u1/n1| > sqrt(2 m v d') + 2/3 d' m``; multiplied out,

       coarse (m >= w / (n0 n1)):  |u0 w - T n0| + g > sqrt(2 v d' w n0 n1) + 2/3 d' w
       fine:    (|u0 w - T n0| + g) a b - 2/3 d' (a + b) n0 n1 > sqrt(2 v d' (a + b) a b) n0 n1

   is necessary for it.  ``u0`` here is River's prefix at the chunk start,
   or its running total plus a constant for a position in the chunk, not
   River's own sum of bucket totals; ``g`` bounds that difference (from the
   magnitudes summed, per chunk: every addition rounds by at most
   ``u |result|``) and the rounding of River's divisions, and the constants
   carry a 1e-9 relative margin (rounding is ~1e-15).  A screen that passes
   proves no cut fires.

``_update(x, exact=True)`` skips the screen; the tests check both paths agree,
and both against River.
"""

from __future__ import annotations

import math
from typing import Any, Self

import numpy as np
from numba import njit

from detectors.base import Detector, DriftResult, shift_examples

_MAX_LEVELS = 64
# Relative slack of the screening test (far above its rounding error, ~1e-15).
_SLACK = 1e-9
_ULP = 2.0**-52
# Values per pass.  A detection resets the window, so the passes already done
# for the rest of the chunk are thrown away: the chunk bounds that waste.
_CHUNK = 4096
# Checks between two rebuilds of the cut list (see the kernel).
_REBUILD_EVERY = 4
# Values per block of the running-total pass (see the kernel).
_BLOCK = 128


@njit(cache=True, nogil=True, error_model="numpy")
def _cut_ratio(u0, u1, n0, n1, dp, v, mwl):  # pragma: no cover - compiled
    """River's cut test, its float operations in its order: (|dm|, epsilon)."""
    delta_mean = (u0 / n0) - (u1 / n1)
    m_recip = 1.0 / (n0 - mwl + 1.0) + 1.0 / (n1 - mwl + 1.0)
    eps = math.sqrt(2.0 * m_recip * v * dp) + 2.0 / 3.0 * dp * m_recip
    return abs(delta_mean), eps


@njit(cache=True, nogil=True, inline="always")
def _merges(received, M):  # pragma: no cover - compiled
    """Merges a level has made after receiving ``received`` summaries: River
    merges its two oldest whenever it holds ``M + 1``."""
    return 0 if received <= M else 1 + (received - M - 1) // 2


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _variance_increments(x, total_before, inc, w0):  # pragma: no cover - compiled
    """River's ``(w - 1) (x - total / (w - 1))**2 / w`` for values 2, 3, ...
    of a chunk starting at width ``w0``.  No chain: the divisions vectorise."""
    for j in range(inc.shape[0]):
        wj = w0 + (j + 2.0)
        dv = x[j] - total_before[j] / (wj - 1.0)
        inc[j] = (wj - 1.0) * dv * dv / wj


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _chains(x, total_out, inc, var_out, t, v, sum_abs_x, sum_abs_total):  # pragma: no cover - compiled
    """River's running total over ``x`` and, side by side, its running
    variance over ``inc`` (an earlier block; either may be shorter)."""
    n = min(x.shape[0], inc.shape[0])
    for q in range(n):
        xq = x[q]
        t += xq
        total_out[q] = t
        v += inc[q]
        var_out[q] = v
        sum_abs_x += abs(xq)
        sum_abs_total += abs(t)
    for q in range(n, x.shape[0]):
        xq = x[q]
        t += xq
        total_out[q] = t
        sum_abs_x += abs(xq)
        sum_abs_total += abs(t)
    for q in range(n, inc.shape[0]):
        v += inc[q]
        var_out[q] = v
    return t, v, sum_abs_x, sum_abs_total


@njit(cache=True, nogil=True, inline="always")
def _count_nonfinite(x):  # pragma: no cover - compiled
    """NaN and infinities in ``x`` (a comparison per value: vectorises)."""
    n = 0
    for k in range(x.shape[0]):
        n += np.int64(abs(x[k]) == math.inf) | np.int64(x[k] != x[k])
    return n


@njit(cache=True, nogil=True, inline="always")
def _pair_sums(a, b):  # pragma: no cover - compiled
    """``b[k] = a[2k] + a[2k + 1]``: a level's merges, oldest first.  (Its
    own function so the two slices are known not to overlap.)"""
    for k in range(b.shape[0]):
        b[k] = a[2 * k] + a[2 * k + 1]


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _coarse_screen(n0s, u0s, u_off, w, T, shift, k2):  # pragma: no cover - compiled
    """Cuts (n0, u0 = u0s + u_off) where ``|u0 w - T n0| + shift > sqrt(k2
    n0 (w - n0))``.  It also tests cuts River skips (n0 or n1 < mwl): an
    extra constraint only makes the screen stricter, and skips a mask."""
    bad = 0
    for c in range(n0s.shape[0]):
        a0 = n0s[c]
        s = abs((u0s[c] + u_off) * w - a0 * T) + shift
        bad += (s > 0.0) & (s * s > k2 * (a0 * (w - a0)))
    return bad


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _fine_screen(n0s, u0s, u_off, w, T, g, c1, c2, mwl):  # pragma: no cover - compiled
    """Cuts where ``(|u0 w - T n0| + g) a b - c1 (a + b) n0 n1`` is positive
    and its square exceeds ``c2 (a + b) a b (n0 n1)**2`` (a, b = n0, n1 - mwl + 1)."""
    bad = 0
    for c in range(n0s.shape[0]):
        a0 = n0s[c]
        a1 = w - a0
        num = abs((u0s[c] + u_off) * w - a0 * T) + g
        ra = a0 - mwl + 1.0
        rb = a1 - mwl + 1.0
        q = a0 * a1
        lhs = num * (ra * rb) - c1 * (ra + rb) * q
        bad += (lhs > 0.0) & (lhs * lhs > c2 * (ra + rb) * (ra * rb) * (q * q)) & (a0 >= mwl) & (a1 >= mwl)
    return bad


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _cut_list(j, fresh, nlev, nlev_end, M, w0, u_off, had, got, off, ends, run_total, lvl_n0, lvl_cut, cn0, cu0):  # pragma: no cover
    """The buckets after ``j + 1`` values of the chunk (``got``: summaries
    each level has received) and the cut list (``cn0``, ``cu0``, oldest
    first), rebuilt from the highest level that changed since the previous
    call.  A cut's u0 is ``ends`` if it ends before the chunk, else
    ``run_total + u_off``.  Returns (levels, cuts)."""
    top_changed = 0
    received = had[0] + j + 1
    for lev in range(nlev_end):
        if lev > 0:
            received = had[lev] + _merges(got[lev - 1], M)
        top_changed = lev if (fresh or received != got[lev]) and received > 0 else top_changed
        got[lev] = received
    if fresh or top_changed >= nlev:  # a new level on top: every cut moves
        nlev = max(nlev, top_changed + 1)
        top_changed = nlev - 1
        n0 = 0
        nc = 0
    else:
        n0 = lvl_n0[top_changed]
        nc = lvl_cut[top_changed]
    # The newest bucket ends the window and is not a cut.  A level holds at
    # most M buckets: M steps each (short loops with varying trip counts cost
    # more in mispredicted exits); the slots past the level's buckets are
    # overwritten by the next level.
    for lev in range(top_changed, -1, -1):
        lvl_n0[lev] = n0
        lvl_cut[lev] = nc
        size = 1 << lev
        k = _merges(got[lev], M)
        base = off[lev] + 2 * k
        held = got[lev] - 2 * k - (1 if lev == 0 else 0)
        for q in range(M):
            end = n0 + (q + 1) * size
            later = end - w0 - 1
            cn0[nc + q] = float(end)
            cu0[nc + q] = run_total[max(later, 0)] + u_off if later >= 0 else ends[base + q]
        n0 += held * size
        nc += held
    return nlev, nc


@njit(cache=True, nogil=True, error_model="numpy")
def _adwin_kernel(x, fst, ist, tot, cnt, delta, clock, M, mwl, grace, exact, det_out, info_out):  # pragma: no cover
    """River's ADWIN (Rust ``AdaptiveWindowing`` + the Python wrapper's reset
    after a detection) over ``x``.

    ``fst`` = [width, total, variance, last_ratio, screen d' (cached), the
    width it was computed at]; ``ist`` = [n_seen, n_levels, window start,
    screened checks, exact checks]; ``tot``/``cnt`` = per level the bucket
    totals (oldest first) and counts.  ``exact`` skips the screens (for
    tests).  Returns the number of detections (-1: a value is not finite,
    nothing changed); per detection ``det_out`` = stream position and
    ``info_out`` = [ratio, change position, upward, width]."""
    m = x.shape[0]
    if _count_nonfinite(x):  # before any state changes
        return -1
    chunk = min(m, _CHUNK)
    cap = M + 1
    ncut_max = _MAX_LEVELS * cap
    n_log = 2 * chunk + ncut_max + 2
    work = np.empty(4 * chunk + 2 * n_log + 2 * ncut_max)
    run_total = work[:chunk]  # River's total after each value of the chunk
    run_var = work[chunk : 2 * chunk]  # ... and its variance
    inc = work[2 * chunk : 3 * chunk]
    positions = work[3 * chunk : 4 * chunk]  # ... and the width
    logs = work[4 * chunk : 4 * chunk + n_log]  # per level: its buckets, then what it receives
    ends = work[4 * chunk + n_log : 4 * chunk + 2 * n_log]  # River's u0 where a bucket ends, for those ending before the chunk
    cn0 = work[4 * chunk + 2 * n_log : 4 * chunk + 2 * n_log + ncut_max]  # the cut list, oldest first: n0
    cu0 = work[4 * chunk + 2 * n_log + ncut_max :]  # ... and u0 (to within e_u0)
    iwork = np.zeros(7 * _MAX_LEVELS, np.int64)
    off = iwork[:_MAX_LEVELS]  # where each level's log starts
    had = iwork[_MAX_LEVELS : 2 * _MAX_LEVELS]  # buckets a level held when the chunk started
    got_end = iwork[2 * _MAX_LEVELS : 3 * _MAX_LEVELS]  # summaries received by the end of the chunk
    got = iwork[3 * _MAX_LEVELS : 4 * _MAX_LEVELS]  # ... by the current cut list
    old_end = iwork[4 * _MAX_LEVELS : 5 * _MAX_LEVELS]  # log entries that end before the chunk
    lvl_n0 = iwork[5 * _MAX_LEVELS : 6 * _MAX_LEVELS]  # n0 and cut index where each level starts
    lvl_cut = iwork[6 * _MAX_LEVELS : 7 * _MAX_LEVELS]
    dp_screen = fst[4]
    dp_w = fst[5]
    ist[3] = 0
    ist[4] = 0
    nd = 0
    i = 0
    while i < m:
        i0 = i
        L = min(m, i0 + chunk) - i0
        w0 = fst[0]
        total0 = fst[1]
        ns0 = ist[0]
        nlev0 = ist[1]
        # -- 1. River's insert_element arithmetic, value by value: width += 1,
        # variance += (w - 1) (x - total / (w - 1))**2 / w (0 while w == 1),
        # total += x.  Two chains of additions (each waits for the previous
        # one) with two divisions per value between them.  In blocks: the
        # divisions of a block run as one vectorised pass, and the variance
        # chain of a block runs in the same loop as the total chain of the
        # next, so the two chains overlap.
        t = total0
        v = fst[2]
        sum_abs_x = 0.0  # error-bound magnitudes, free beside the chains
        sum_abs_total = 0.0
        w1 = w0 + 1.0
        dv = x[i0] - total0 / (w1 - 1.0)
        first_inc = (w1 - 1.0) * dv * dv / w1 if w1 > 1.0 else 0.0
        for lo in range(0, L + _BLOCK, _BLOCK):
            hi = min(L, lo + _BLOCK)
            prev = max(lo - _BLOCK, 0)
            t, v, sum_abs_x, sum_abs_total = _chains(
                x[i0 + lo : i0 + hi], run_total[lo:hi], inc[prev : min(lo, L)], run_var[prev : min(lo, L)],
                t, v, sum_abs_x, sum_abs_total)
            if lo == 0 and hi > 0:
                inc[0] = first_inc
                _variance_increments(x[i0 + 1 : i0 + hi], run_total[: hi - 1], inc[1:hi], w0)
            elif lo < hi:
                _variance_increments(x[i0 + lo : i0 + hi], run_total[lo - 1 : hi - 1], inc[lo:hi], w0 + (lo - 1.0))
        for j in range(L):
            positions[j] = w0 + (j + 1.0)
        # -- 2. compress_buckets for the whole chunk, level by level: the
        # k-th merge of a level adds its summaries 2k and 2k + 1 (oldest
        # first).  First the counts, and where each level's log starts.
        pos = 0
        lev = 0
        incoming = L
        while True:
            c = cnt[lev] if lev < nlev0 else 0
            off[lev] = pos
            had[lev] = c
            got_end[lev] = c + incoming
            pos += c + incoming
            incoming = _merges(c + incoming, M)
            lev += 1
            if lev >= nlev0 and incoming == 0:
                break
        nlev_end = lev
        # the buckets held at the chunk start, and River's u0 after each
        u = 0.0
        old_abs = 0.0
        for lev in range(nlev0 - 1, -1, -1):
            for q in range(had[lev]):
                tq = tot[lev, q]
                u += tq
                old_abs += abs(tq)
                logs[off[lev] + q] = tq
                ends[off[lev] + q] = u
        u_w0 = u
        u_off = u_w0 - total0  # u0 at a position in the chunk is run_total + u_off
        # the chunk's values, then the merges level by level; a merged bucket
        # ends where its newer half does
        logs[off[0] + had[0] : off[0] + had[0] + L] = x[i0 : i0 + L]
        old_end[0] = had[0]
        for lev in range(1, nlev_end):
            src = off[lev - 1]
            dst = off[lev] + had[lev]
            n_in = got_end[lev] - had[lev]
            _pair_sums(logs[src : src + 2 * n_in], logs[dst : dst + n_in])
            n_old = min(n_in, old_end[lev - 1] // 2)
            for k in range(n_old):
                ends[dst + k] = ends[src + 2 * k + 1]
            old_end[lev] = had[lev] + n_old
        # The screens take u0 at a cut from ``ends`` or ``run_total``, and u1
        # as T - u0.  River's u0 and u1 sum bucket totals one by one, and the
        # totals of the chunk's buckets come from merges: every such sum
        # rounds by at most u |result|.  The buckets split the window, so
        # their |totals| sum to at most ``mags``, and a merge tree has at
        # most nlev_end levels: e_u0 bounds |u0 - River's u0| and
        # |T - u0 - River's u1| at every cut of the chunk (factor 4 spare).
        mags = old_abs + sum_abs_x + abs(total0)
        e_u0 = 4.0 * _ULP * ((ncut_max + nlev_end + 2.0) * mags + sum_abs_total) * (1.0 + 1e-6)
        # -- 3. the checks: River checks when width % clock == 0.  The cut
        # list is rebuilt every _REBUILD_EVERY checks; in between, the screens
        # also cover every position since (a cut can only appear there, and
        # one that a merge has removed is just an extra constraint)
        j = clock - int(w0) % clock - 1
        fresh = True
        nlev = nlev0
        nc = 0
        since = 0  # index in the chunk of the first position not in the list
        since_rebuild = _REBUILD_EVERY
        detected = False
        w0i = int(w0)
        while j < L:
            w = w0 + (j + 1.0)
            if not (w > grace):
                j += clock
                continue
            rebuilt = since_rebuild >= _REBUILD_EVERY or fresh
            if rebuilt:
                nlev, nc = _cut_list(j, fresh, nlev, nlev_end, M, w0i, u_off, had, got, off, ends, run_total,
                                     lvl_n0, lvl_cut, cn0, cu0)
                fresh = False
                since = j
                since_rebuild = 0
            since_rebuild += 1
            T = run_total[j]
            v = run_var[j] / w
            last_check = i0 + j + 1 + clock > m
            # d' only grows with the width: the screen may use a value computed
            # at a smaller width (a lower bound), refreshed when the width doubles
            if dp_w <= 0.0 or w >= 2.0 * dp_w or w < dp_w:
                dp_screen = math.log(2.0 * math.log(w) / delta)
                dp_w = w
            safe = not exact and dp_screen > 0.0 and v >= 0.0
            if safe:
                # Screens proving |dm| <= eps at every cut with products only.
                # dm = (u0 n1 - u1 n0) / (n0 n1) = (u0 w - T n0) / (n0 n1) up
                # to rounding: g bounds e_u0 and every rounding of River's
                # divisions and of the products here.  Branch-free so that the
                # loops vectorise.
                g = w * (2.0 * e_u0 + 8.0 * _ULP * (abs(T) + mags + e_u0))
                bad = 1
                if mwl >= 1.0:
                    # coarse: m_recip = 1/a + 1/b >= w / (n0 n1) as a <= n0, b <= n1,
                    # so firing needs |u0 w - T n0| + g > sqrt(2 v d' w n0 n1) + 2/3 d' w
                    k1 = 2.0 / 3.0 * dp_screen * w * (1.0 - _SLACK)
                    k2 = 2.0 * v * dp_screen * w * (1.0 - 3.0 * _SLACK)
                    bad = (_coarse_screen(cn0[:nc], cu0[:nc], 0.0, w, T, g - k1, k2)
                           + _coarse_screen(positions[since:j], run_total[since:j], u_off, w, T, g - k1, k2))
                if bad:
                    # exact m_recip = (a + b) / (a b)
                    c2 = 2.0 * v * dp_screen * (1.0 - _SLACK)
                    c1 = 2.0 / 3.0 * dp_screen * (1.0 - _SLACK)
                    bad = (_fine_screen(cn0[:nc], cu0[:nc], 0.0, w, T, g, c1, c2, mwl)
                           + _fine_screen(positions[since:j], run_total[since:j], u_off, w, T, g, c1, c2, mwl))
                safe = bad == 0
                ist[3] += 1
            if safe and not last_check:
                j += clock
                continue
            if not safe:
                ist[4] += 1
            if not rebuilt:  # River's buckets now
                nlev, nc = _cut_list(j, fresh, nlev, nlev_end, M, w0i, u_off, had, got, off, ends, run_total,
                                     lvl_n0, lvl_cut, cn0, cu0)
                since = j
                since_rebuild = 1
            # River's detect_change: every cut, oldest bucket first
            dp = math.log(2.0 * math.log(w) / delta)
            n0 = 0.0
            u0 = 0.0
            u1 = T
            best = -1.0  # largest ratio among the cuts that fire
            best_n0 = 0.0
            best_up = False
            top = 0.0  # largest ratio among all valid cuts
            for lev in range(nlev - 1, -1, -1):
                size = float(1 << lev)
                lo = off[lev] + 2 * _merges(got[lev], M)
                hi = off[lev] + got[lev]
                for q in range(lo, hi):
                    n0 += size
                    tq = logs[q]
                    u0 += tq
                    u1 -= tq
                    if lev == 0 and q == hi - 1:
                        break
                    a1 = w - n0  # River's n1 (exact: integers below 2**53)
                    if not (a1 >= mwl and n0 >= mwl):
                        continue
                    adm, eps = _cut_ratio(u0, u1, n0, a1, dp, v, mwl)
                    ratio = adm / eps
                    if ratio > top:
                        top = ratio
                    if adm > eps and ratio > best:
                        best = ratio
                        best_n0 = n0
                        best_up = u0 / n0 - u1 / a1 < 0
            if best < 0.0:
                if last_check:
                    fst[3] = top
                j += clock
                continue
            det_out[nd] = ns0 + j
            info_out[nd, 0] = best
            info_out[nd, 1] = ist[2] + best_n0
            info_out[nd, 2] = 1.0 if best_up else 0.0
            info_out[nd, 3] = w
            nd += 1
            # the wrapper throws the whole window away; go on after this value
            fst[0] = 0.0
            fst[1] = 0.0
            fst[2] = 0.0
            cnt[0] = 0
            ist[0] = ns0 + j + 1
            ist[1] = 1
            ist[2] = ns0 + j + 1
            dp_w = 0.0
            i = i0 + j + 1
            detected = True
            break
        if detected:
            continue
        # -- the chunk ends without a detection: keep its buckets
        for lev in range(nlev_end):
            k = _merges(got_end[lev], M)
            c = got_end[lev] - 2 * k
            for q in range(c):
                tot[lev, q] = logs[off[lev] + 2 * k + q]
            cnt[lev] = c
        fst[0] = w0 + L
        fst[1] = run_total[L - 1]
        fst[2] = run_var[L - 1]
        ist[0] = ns0 + L
        ist[1] = nlev_end
        i = i0 + L
    fst[4] = dp_screen
    fst[5] = dp_w
    return nd


class ADWIN(Detector):
    """ADWIN change detector with River's parameters and decisions.

    ``statistic`` is the largest ``|mean(W0) - mean(W1)| / epsilon_cut`` over
    the cut points of the latest check and ``threshold`` is 1.0 (so
    ``detected`` is ``statistic > threshold``).  ``change_index`` is the stream
    position of the most significant cut when a change is detected.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(12345)
    >>> stream = np.concatenate([rng.integers(0, 2, 1000), rng.integers(4, 8, 1000)])
    >>> adwin = ADWIN()
    >>> r = adwin.update(stream)
    >>> r.detected, r.extra["detections"], r.change_index
    (True, [1023], 1000)
    """

    name = "adwin"

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ):
        if max_buckets < 2:
            raise ValueError("max_buckets must be at least 2")
        self.delta = float(delta)
        self.clock = int(clock)
        self.max_buckets = int(max_buckets)
        self.min_window_length = int(min_window_length)
        self.grace_period = int(grace_period)
        self._init_state(0, None)

    def _init_state(self, n_seen: int, last_ratio: float | None) -> None:
        """A fresh window; the kernel keeps its state in these arrays."""
        self._tot = np.zeros((_MAX_LEVELS, self.max_buckets + 1))  # bucket totals per level, oldest first
        self._cnt = np.zeros(_MAX_LEVELS, dtype=np.int64)
        # width, total, variance, last ratio, screen d' and the width it was computed at
        self._fst = np.array([0.0, 0.0, 0.0, np.nan if last_ratio is None else last_ratio, 0.0, 0.0])
        # n_seen, levels, window start, screened checks, exact checks (last batch)
        self._ist = np.array([n_seen, 1, n_seen, 0, 0], dtype=np.int64)
        self._det = np.empty(0, dtype=np.int64)  # the kernel's detection buffers, grown as needed
        self._info = np.empty((0, 4))

    @property
    def n_seen(self) -> int:
        return int(self._ist[0])

    @property
    def _w(self) -> int:
        return int(self._fst[0])

    @property
    def _last_ratio(self) -> float | None:
        v = float(self._fst[3])
        return None if math.isnan(v) else v

    @property
    def _levels(self) -> list[list[float]]:
        if self._w == 0:
            return []
        return [self._tot[i, : self._cnt[i]].tolist() for i in range(int(self._ist[1]))]

    def update(self, values: np.ndarray) -> DriftResult | None:
        return self._update(np.ascontiguousarray(values, dtype=np.float64).ravel(), exact=False)

    def _update(self, x: np.ndarray, exact: bool) -> DriftResult | None:
        batch_start = self.n_seen
        ndet = len(x) // max(self.clock, 1) + 1  # at most one detection per check
        if len(self._det) < ndet:
            self._det = np.empty(ndet, dtype=np.int64)
            self._info = np.empty((ndet, 4))
        det, info = self._det, self._info
        nd = _adwin_kernel(x, self._fst, self._ist, self._tot, self._cnt, self.delta, self.clock, self.max_buckets,
                           float(self.min_window_length), float(self.grace_period), exact, det, info)
        if nd < 0:
            raise ValueError("ADWIN: values must be finite (drop NaN/inf before update)")
        if nd:
            detections = det[:nd].tolist()
            changes = [int(v) for v in info[:nd, 1]]
            ratio, change, up, width = float(info[nd - 1, 0]), changes[-1], bool(info[nd - 1, 2]), int(info[nd - 1, 3])
            pos = detections[-1]
            return DriftResult(
                statistic=ratio,
                threshold=1.0,
                detected=True,
                n_seen=self.n_seen,
                change_index=change,
                examples=shift_examples(x, batch_start, change, pos, up),
                detail=(
                    f"ADWIN: mean {'increase' if up else 'decrease'} detected at record {pos} "
                    f"(|mean difference| = {ratio:.3g} x epsilon over a window of "
                    f"{width}), cut at record {change}"
                ),
                extra={"detections": detections, "change_points": changes},
            )
        ratio = self._last_ratio
        if ratio is None:
            return None
        width = self._w
        return DriftResult(
            statistic=ratio,
            threshold=1.0,
            detected=False,
            n_seen=self.n_seen,
            detail=f"ADWIN: no change over a window of {width} (largest |mean difference| = {ratio:.3g} x epsilon)",
            extra={"detections": [], "width": width},
        )

    @property
    def width(self) -> int:
        """Values in the current window (since the last reset)."""
        return self._w

    @property
    def estimation(self) -> float:
        """Mean of the current window."""
        return float(self._fst[1]) / self._w if self._w else 0.0

    def state_dict(self) -> dict[str, Any]:
        return {
            "params": {
                "delta": self.delta,
                "clock": self.clock,
                "max_buckets": self.max_buckets,
                "min_window_length": self.min_window_length,
                "grace_period": self.grace_period,
            },
            "n_seen": self.n_seen,
            "w": self._w,
            "total": float(self._fst[1]),
            "variance": float(self._fst[2]),
            "levels": self._levels,
            "start": int(self._ist[2]),
            "last_ratio": self._last_ratio,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        d = cls(**state["params"])
        d._init_state(int(state["n_seen"]), state["last_ratio"])
        levels = [[float(v) for v in lv] for lv in state["levels"]]
        for i, lv in enumerate(levels):
            d._tot[i, : len(lv)] = lv
            d._cnt[i] = len(lv)
        d._fst[:3] = [float(state["w"]), float(state["total"]), float(state["variance"])]
        d._ist[1] = max(1, len(levels))
        d._ist[2] = int(state["start"])
        return d
