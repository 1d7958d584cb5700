"""The click model behind the synthetic CTR data, and the latent world that samples it.

:class:`CtrWorld` holds item and user tables, field factors and every user's click history, and
turns them into impressions block by block (:meth:`CtrWorld.block`). The click model
(coefficients in :class:`ClickModel`)::

    logit(p_true) = bias + q_item + b_category + b_brand + b_user + b_hour + b_device
                  + w_price z(log1p price) + w_discount discount + w_clicks z(log1p item_clicks)
                  + w_activity z(log1p user_activity)                          first order
                  + w_fields <a_age + a_gender + a_city, c_category + c_brand>  rank-4 fields
                  + w_interest (s - s_ref),  s = (1/beta) log mean_j exp(beta cos(v_item, v_hist_j))

``z`` standardizes over impressions. ``v`` are latent unit item vectors clustered around their
category's centre; ``s`` is a soft maximum of the similarity of the candidate to the items the
user clicked (the term is 0 for an empty history): what DIN's attention over ``hist_item_id``
learns and what mean pooling dilutes. Users have 1-6 interest categories; half of the
impressions come from them (Zipf popularity inside the category), the rest from the global Zipf
item popularity, so histories carry the user's interests. A history is the items the user
clicked strictly before the row (most recent last, at most 50), after a pre-period history drawn
from the user's interests: for consecutive rows r < r' of one user,
``hist(r') == (hist(r) + [item(r)] if label(r) else hist(r))[-50:]``.

Example::

    >>> world = CtrWorld(np.random.default_rng(0), rows=1_000, model=ClickModel())
    >>> table = world.block(np.random.default_rng(1), 300)
    >>> table.num_rows, table.schema.equals(CTR_ARROW_SCHEMA)
    (300, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from recsys_embed.pipelines.synthetic.sampling import power_law_ranks

MAX_HISTORY = 50
USER_INIT_BLOCK = 1 << 16  # users initialised per step (bounds the memory of the set-up)
CALIBRATION_ROWS = 100_000  # impressions drawn to standardize the numeric effects
SIMILARITY_BATCH = 4096  # rows per history-similarity step, sorted by history length
ROWS_PER_DAY = 75_000
START_TIMESTAMP = 1_704_067_200  # 2024-01-01 00:00:00 UTC
HOURLY_TRAFFIC = np.array(
    [3, 2, 1.5, 1, 1, 1.5, 3, 5, 6, 6, 6, 7, 8, 7, 6, 6, 6, 7, 8, 9, 10, 10, 8, 5], dtype=np.float64
)
AGE_BUCKETS = np.array([18, 25, 35, 45, 55, 65], dtype=np.int8)
AGE_SHARES = np.array([0.1, 0.3, 0.25, 0.17, 0.11, 0.07])
GENDERS = np.array(["F", "M", "U"])
GENDER_SHARES = np.array([0.48, 0.45, 0.07])
DEVICES = np.array(["android", "ios", "web"])
DEVICE_SHARES = np.array([0.5, 0.35, 0.15])

CTR_ARROW_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("item_id", pa.int64()),
        ("item_category", pa.int64()),
        ("item_brand", pa.int64()),
        ("user_age", pa.int8()),
        ("user_gender", pa.string()),
        ("user_city", pa.int32()),
        ("hour", pa.int8()),
        ("device", pa.string()),
        ("price", pa.float32()),
        ("item_clicks", pa.int64()),
        ("user_activity", pa.int32()),
        ("timestamp", pa.int64()),
        ("hist_item_id", pa.list_(pa.int64())),
        ("hist_item_category", pa.list_(pa.int64())),
        ("label", pa.int8()),
        ("p_true", pa.float32()),
    ]
)


@dataclass(frozen=True)
class ClickModel:
    """The coefficients of the click model (see the module docstring for the formula)."""

    bias: float = -2.5
    item_quality_std: float = 0.35
    category_std: float = 0.3
    brand_std: float = 0.25
    user_std: float = 0.4
    hour_amplitude: float = 0.2
    device_effects: tuple[float, float, float] = (0.0, 0.15, -0.25)  # android, ios, web
    w_price: float = -0.25
    w_discount: float = 1.5
    w_clicks: float = 0.2
    w_activity: float = -0.15
    field_rank: int = 4
    field_std: float = 0.45
    w_fields: float = 0.5
    latent_dim: int = 16
    item_spread: float = 0.7  # distance of an item's latent vector from its category centre
    beta: float = 16.0
    s_ref: float = 0.35
    w_interest: float = 5.0
    interest_share: float = 0.5  # impressions drawn from the user's interest categories
    max_interests: int = 6  # each user has 1..max_interests interest categories
    pre_history_median: float = 6.0  # pre-period history lengths: lognormal, capped at MAX_HISTORY
    pre_history_sigma: float = 1.0


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _zscore(x: np.ndarray) -> tuple[float, float]:
    return float(x.mean()), float(x.std() + 1e-9)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32, copy=False)


class CtrWorld:
    """The latent state: item and user tables, field factors and each user's click history.
    Construction and :meth:`block` draw from the generator they are given (``write_ctr`` passes
    one generator to both, so a seed fixes the whole dataset).

    Sizes scale with ``rows``: ``rows / 15`` users, ``rows / 20`` items. Histories live in a
    ring buffer of ``MAX_HISTORY`` item indices per user (``[U, 50]`` int32, 200 bytes a user).
    """

    def __init__(self, rng: np.random.Generator, rows: int, model: ClickModel) -> None:
        m = self.model = model
        n_users, n_items = max(100, rows // 15), max(200, rows // 20)
        n_cats, n_cities = int(np.clip(n_items // 200, 20, 2000)), 300
        n_brands = max(n_cats, n_items // 25)
        self.hour_effect = m.hour_amplitude * np.sin(2 * np.pi * (np.arange(24) - 14) / 24)
        self.device_effect = np.array(m.device_effects)
        traffic = np.concatenate(([0.0], np.cumsum(HOURLY_TRAFFIC)))
        self.day_fraction, self.day_seconds = traffic / traffic[-1], np.arange(25) * 3600.0
        self.warped_days = 0.0

        # items: Zipf popularity over a random permutation, Zipf-sized categories
        self.by_popularity = rng.permutation(n_items).astype(np.int32)
        pop_rank = np.empty(n_items, dtype=np.int64)
        pop_rank[self.by_popularity] = np.arange(n_items)
        self.item_cat = power_law_ranks(rng, n_cats, 0.9, size=n_items, offset=3.0).astype(np.int32)
        order = np.lexsort((pop_rank, self.item_cat))
        self.cat_items = order.astype(np.int32)
        self.cat_size = np.bincount(self.item_cat, minlength=n_cats)
        self.cat_start = np.concatenate(([0], np.cumsum(self.cat_size)))
        brands_per_cat = np.maximum(1, np.round(n_brands * self.cat_size / n_items)).astype(np.int64)
        brand_start = np.concatenate(([0], np.cumsum(brands_per_cat)))
        self.item_brand = (
            brand_start[self.item_cat] + power_law_ranks(rng, brands_per_cat[self.item_cat], 1.0)
        ).astype(np.int32)
        n_brands = int(brand_start[-1])
        self.item_quality = rng.normal(0, m.item_quality_std, n_items).astype(np.float32)
        cat_price = rng.normal(3.0, 0.8, n_cats)
        self.item_price = np.exp(cat_price[self.item_cat] + rng.normal(0, 0.5, n_items)).astype(np.float32)
        self.item_clicks = rng.poisson(3e4 * (pop_rank + 10.0) ** -0.9 * np.exp(self.item_quality)).astype(np.int64)
        centres = _unit_rows(rng.standard_normal((n_cats, m.latent_dim), dtype=np.float32))
        vec = rng.standard_normal((n_items, m.latent_dim), dtype=np.float32)
        vec *= np.float32(m.item_spread / np.sqrt(m.latent_dim))
        vec += centres[self.item_cat]
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        self.item_vec = vec
        self.cat_bias = rng.normal(0, m.category_std, n_cats)
        self.brand_bias = rng.normal(0, m.brand_std, n_brands)
        self.cat_factor = rng.normal(0, m.field_std, (n_cats, m.field_rank))
        self.brand_factor = rng.normal(0, m.field_std, (n_brands, m.field_rank))

        # users: Zipf activity, demographics, interest categories (drawn by item popularity)
        self.by_activity = rng.permutation(n_users).astype(np.int32)
        act_rank = np.empty(n_users, dtype=np.int64)
        act_rank[self.by_activity] = np.arange(n_users)
        self.user_age = rng.choice(len(AGE_BUCKETS), n_users, p=AGE_SHARES).astype(np.int8)
        self.user_gender = rng.choice(len(GENDERS), n_users, p=GENDER_SHARES).astype(np.int8)
        self.user_city = power_law_ranks(rng, n_cities, 1.0, size=n_users, offset=2.0).astype(np.int16)
        self.user_device = rng.choice(len(DEVICES), n_users, p=DEVICE_SHARES).astype(np.int8)
        self.user_bias = rng.normal(0, m.user_std, n_users).astype(np.float32)
        sessions = np.exp(rng.normal(np.log(8.0), 0.9, n_users)) * ((act_rank + 10.0) / 10.0) ** -0.25
        self.user_activity = (1 + rng.poisson(sessions)).astype(np.int32)
        self.n_interests = rng.integers(1, m.max_interests + 1, n_users).astype(np.int8)
        self.age_factor = rng.normal(0, m.field_std, (len(AGE_BUCKETS), m.field_rank))
        self.gender_factor = rng.normal(0, m.field_std, (len(GENDERS), m.field_rank))
        self.city_factor = rng.normal(0, m.field_std, (n_cities, m.field_rank))

        self.interests = np.zeros((n_users, m.max_interests), dtype=np.int16)
        self.ring = np.zeros((n_users, MAX_HISTORY), dtype=np.int32)
        pre_len = np.floor(rng.lognormal(np.log(m.pre_history_median), m.pre_history_sigma, n_users))
        self.hist_count = np.minimum(pre_len, MAX_HISTORY).astype(np.int32)
        for lo in range(0, n_users, USER_INIT_BLOCK):
            self._init_users(rng, np.arange(lo, min(lo + USER_INIT_BLOCK, n_users)))

        # numeric effects are standardized over impressions (not over the tables), at any scale
        user, item = self._impressions(rng, CALIBRATION_ROWS)
        self.log_price = _zscore(np.log1p(self.item_price[item]))
        self.log_clicks = _zscore(np.log1p(self.item_clicks[item]))
        self.log_activity = _zscore(np.log1p(self.user_activity[user]))
        self.user_seen = np.zeros(n_users, dtype=bool)
        self.item_seen = np.zeros(n_items, dtype=bool)

    def _init_users(self, rng: np.random.Generator, users: np.ndarray) -> None:
        """Interest categories (drawn by item popularity) and pre-period histories drawn from them."""
        shape = (len(users), self.model.max_interests)
        popular = self.by_popularity[power_law_ranks(rng, len(self.by_popularity), 1.0, size=shape)]
        self.interests[users] = self.item_cat[popular]
        count = self.hist_count[users]
        owner = np.repeat(users, count)
        slots = np.arange(len(owner)) - np.repeat(np.cumsum(count) - count, count)
        self.ring[owner, slots] = self._interest_items(rng, owner)

    def _interest_items(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        """One item per user from one of the user's interest categories (Zipf inside it)."""
        pick = (rng.random(len(users)) * self.n_interests[users]).astype(np.int64)
        cat = self.interests[users, pick]
        return self.cat_items[self.cat_start[cat] + power_law_ranks(rng, self.cat_size[cat], 1.0)]

    def _impressions(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` (user, item) pairs: users by Zipf activity, items from the user's interests
        (``interest_share``) or by global Zipf popularity."""
        user = self.by_activity[power_law_ranks(rng, len(self.by_activity), 0.8, size=n, offset=10.0)]
        from_interest = rng.random(n) < self.model.interest_share
        item = self.by_popularity[power_law_ranks(rng, len(self.by_popularity), 1.0, size=n, offset=2.0)]
        item[from_interest] = self._interest_items(rng, user[from_interest])
        return user, item

    def _timestamps(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Non-decreasing Unix seconds with a daily traffic cycle (``HOURLY_TRAFFIC``)."""
        warped = self.warped_days + np.cumsum(rng.exponential(1.0 / ROWS_PER_DAY, n))
        self.warped_days = float(warped[-1])
        day = np.floor(warped)
        seconds = np.interp(warped - day, self.day_fraction, self.day_seconds)
        return START_TIMESTAMP + day.astype(np.int64) * 86_400 + seconds.astype(np.int64)

    def block(self, rng: np.random.Generator, n: int) -> pa.Table:
        """The next ``n`` impressions (in time order) as an Arrow table of ``CTR_ARROW_SCHEMA``."""
        m = self.model
        ts = self._timestamps(rng, n)
        hour = ((ts // 3600) % 24).astype(np.int8)
        user, item = self._impressions(rng, n)
        device = np.where(rng.random(n) < 0.8, self.user_device[user], rng.integers(0, len(DEVICES), n))
        cat, brand = self.item_cat[item], self.item_brand[item]
        discount = rng.choice(np.array([0.0, 0.1, 0.2, 0.3]), n, p=[0.6, 0.2, 0.1, 0.1])
        price = np.round(self.item_price[item] * (1.0 - discount), 2).astype(np.float32)
        self.user_seen[user] = True
        self.item_seen[item] = True

        user_fields = self.age_factor[self.user_age[user]] + self.gender_factor[self.user_gender[user]]
        user_fields += self.city_factor[self.user_city[user]]
        item_fields = self.cat_factor[cat] + self.brand_factor[brand]
        logit = (
            m.bias + self.item_quality[item] + self.cat_bias[cat] + self.brand_bias[brand] + self.user_bias[user]
            + self.hour_effect[hour] + self.device_effect[device]
            + m.w_price * (np.log1p(price) - self.log_price[0]) / self.log_price[1]
            + m.w_discount * discount
            + m.w_clicks * (np.log1p(self.item_clicks[item]) - self.log_clicks[0]) / self.log_clicks[1]
            + m.w_activity * (np.log1p(self.user_activity[user]) - self.log_activity[0]) / self.log_activity[1]
            + m.w_fields * np.einsum("nr,nr->n", user_fields, item_fields)
        )  # fmt: skip
        hist, hist_len, p_true, label = self._histories_and_clicks(rng, user, item, logit)

        mask = np.arange(MAX_HISTORY) < hist_len[:, None]
        offsets = pa.array(np.concatenate(([0], np.cumsum(hist_len))).astype(np.int32))
        hist_items = hist[mask]
        columns = {
            "user_id": user + 1,
            "item_id": item + 1,
            "item_category": cat + 1,
            "item_brand": brand + 1,
            "user_age": AGE_BUCKETS[self.user_age[user]],
            "user_gender": GENDERS[self.user_gender[user]],
            "user_city": self.user_city[user] + 1,
            "hour": hour,
            "device": DEVICES[device],
            "price": price,
            "item_clicks": self.item_clicks[item],
            "user_activity": self.user_activity[user],
            "timestamp": ts,
            "hist_item_id": pa.ListArray.from_arrays(offsets, pa.array(hist_items + 1, type=pa.int64())),
            "hist_item_category": pa.ListArray.from_arrays(
                offsets, pa.array(self.item_cat[hist_items] + 1, type=pa.int64())
            ),
            "label": label,
            "p_true": p_true,
        }
        arrays = [
            col if isinstance(col, pa.Array) else pa.array(col, type=f.type)
            for col, f in zip(columns.values(), CTR_ARROW_SCHEMA)
        ]
        return pa.Table.from_arrays(arrays, schema=CTR_ARROW_SCHEMA)

    def _histories_and_clicks(
        self, rng: np.random.Generator, user: np.ndarray, item: np.ndarray, logit: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Walk the block in rounds: round k holds each user's k-th row of the block, so the users
        of a round are distinct and their histories update with one vectorized scatter.

        Returns the histories ``[n, 50]`` int32 (left-aligned, oldest first), their lengths ``[n]``,
        ``p_true`` ``[n]`` float32 and ``label`` ``[n]`` int8.
        """
        n = len(user)
        m = self.model
        order = np.argsort(user, kind="stable")
        sorted_user = user[order]
        first = np.flatnonzero(np.r_[True, sorted_user[1:] != sorted_user[:-1]])
        occurrence = np.empty(n, dtype=np.int64)
        occurrence[order] = np.arange(n) - np.repeat(first, np.diff(np.r_[first, n]))
        by_round = np.argsort(occurrence, kind="stable")
        round_sizes = np.bincount(occurrence)
        draws = rng.random(n)
        hist = np.zeros((n, MAX_HISTORY), dtype=np.int32)
        hist_len = np.zeros(n, dtype=np.int64)
        p_true = np.zeros(n, dtype=np.float32)
        label = np.zeros(n, dtype=np.int8)
        start = 0
        for size in round_sizes:
            rows = by_round[start : start + size]
            start += size
            count = self.hist_count[user[rows]].astype(np.int64)
            by_length = np.argsort(count, kind="stable")  # slices of similar width below
            rows, count = rows[by_length], count[by_length]
            u, length = user[rows], np.minimum(count, MAX_HISTORY)
            hist_len[rows] = length
            s = np.zeros(size, dtype=np.float64)
            for lo in range(0, size, SIMILARITY_BATCH):
                sl = slice(lo, lo + SIMILARITY_BATCH)
                width = int(length[sl][-1])
                slots = (count[sl] - length[sl])[:, None] + np.arange(width)
                h = self.ring[u[sl, None], slots % MAX_HISTORY]
                hist[rows[sl], :width] = h
                s[sl] = self._soft_max_similarity(self.item_vec[item[rows[sl]]], h, length[sl])
            interest = np.where(length > 0, s - m.s_ref, 0.0)
            p = _sigmoid(logit[rows] + m.w_interest * interest).astype(np.float32)
            p_true[rows] = p
            clicked = draws[rows] < p
            label[rows] = clicked
            cu = u[clicked]
            self.ring[cu, count[clicked] % MAX_HISTORY] = item[rows[clicked]]
            self.hist_count[cu] += 1
        return hist, hist_len, p_true, label

    def _soft_max_similarity(self, cand: np.ndarray, hist: np.ndarray, length: np.ndarray) -> np.ndarray:
        """``(1/beta) log mean_j exp(beta cos(cand, hist_j))`` over the valid history slots.

        cand ``[n, K]`` unit vectors, hist ``[n, W]`` item indices, length ``[n]``; 0 where empty.
        As ``cos <= 1`` it is computed as ``1 + (1/beta) log mean_j exp(beta (cos_j - 1))``.
        """
        beta = np.float32(self.model.beta)
        cos = np.einsum("nk,nwk->nw", cand, self.item_vec[hist])
        weight = np.exp(beta * (cos - np.float32(1.0)))
        weight *= np.arange(hist.shape[1]) < length[:, None]
        with np.errstate(divide="ignore"):
            s = 1.0 + np.log(weight.sum(axis=1, dtype=np.float64) / np.maximum(length, 1)) / self.model.beta
        return np.where(length > 0, s, 0.0)
