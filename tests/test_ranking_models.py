"""Neural rankers on planted data: each beats random and popularity order, the multi-task
heads learn two different planted targets, save -> load scores identically."""

from __future__ import annotations

import numpy as np
import pytest

from recfunnel.candidates import Candidates
from recfunnel.data.split import hold_out_steps
from recfunnel.features.pointintime import PointInTimeFeatures
from recfunnel.nn.training import TrainConfig
from recfunnel.query import QueryBatch, step_queries
from recfunnel.rank.metrics import auc, gauc
from recfunnel.rank.neural import NEURAL_RANKERS

PER_QUERY = 16


def small(name: str, **kw):
    cls = NEURAL_RANKERS[name]
    train = TrainConfig(epochs=6, batch_size=256, learning_rate=3e-3, eval_every=1, patience=2, refit=False, progress=False)
    extra = {"hidden": [32, 16]} if "hidden" in cls.Config.model_fields and name not in ("lr", "fm", "ffm") else {}
    return cls(cls.Config(embed_dim=8, train=train, **extra, **kw))


@pytest.fixture(scope="module")
def rows(planted):
    """Each user's last 3 steps as queries: the target plus negatives drawn by popularity
    (so popularity alone says little), with point-in-time features."""
    ds, _ = planted
    val = hold_out_steps(ds, 3)
    pit = PointInTimeFeatures().fit(val.fit)
    queries = step_queries(ds, val.users, val.positions)
    rng = np.random.default_rng(0)
    pop = np.bincount(val.fit.item, minlength=ds.n_items).astype(np.float64) + 1.0
    neg = rng.choice(ds.n_items, (len(queries), PER_QUERY - 1), p=pop / pop.sum())
    items = np.column_stack([val.items, neg]).ravel().astype(np.int32)
    q = np.repeat(np.arange(len(queries)), PER_QUERY).astype(np.int32)
    cands = Candidates(q, items, np.zeros(len(q), np.float32), len(queries))
    pit.hydrate(QueryBatch(queries, ds.n_items), cands)
    label = (np.arange(len(q)) % PER_QUERY == 0).astype(np.float32)
    test_q = rng.random(len(queries)) < 0.25
    is_test = test_q[q]
    return cands, label, is_test, pit.specs()


def _fit(name, rows, like=None, **kw):
    cands, label, is_test, specs = rows
    tr = np.flatnonzero(~is_test)
    m = small(name, **kw).fit(cands.take(tr), label[tr], specs.dense, specs=specs, like=None if like is None else like[tr])
    return m


@pytest.mark.parametrize("name", sorted(NEURAL_RANKERS))
def test_ranker_beats_random_and_popularity(name, rows, tmp_path):
    cands, label, is_test, specs = rows
    te = np.flatnonzero(is_test)
    test = cands.take(te)
    model = _fit(name, rows)
    s = model.score(test)
    got = gauc(label[te], s, test.query)
    popular = gauc(label[te], test.features["pit_item_count"], test.query)
    rand = gauc(label[te], np.random.default_rng(1).random(len(te)), test.query)
    assert got > max(popular, rand) + 0.08, (name, got, popular, rand)
    assert 0 <= model.report["calibration_error"] < 0.05
    # save -> load gives identical scores
    model.save(tmp_path / name)
    again = type(model).load(tmp_path / name)
    np.testing.assert_array_equal(again.score(test), s)
    assert not list((tmp_path / name).glob("*.pkl"))


@pytest.mark.parametrize("loss", ["listwise", "both"])
def test_listwise_loss_orders_each_query(loss, rows, tmp_path):
    """The in-query softmax loss learns the planted order too, and its Platt-scaled scores
    are still probabilities on the training sample's scale."""
    cands, label, is_test, _ = rows
    te = np.flatnonzero(is_test)
    test = cands.take(te)
    model = _fit("deepfm", rows, loss=loss, dense_buckets=8)
    s = model.score(test)
    popular = gauc(label[te], test.features["pit_item_count"], test.query)
    assert gauc(label[te], s, test.query) > popular + 0.08
    assert 0 <= model.report["calibration_error"] < 0.05
    model.save(tmp_path / loss)  # the bucket edges travel with the weights
    np.testing.assert_array_equal(type(model).load(tmp_path / loss).score(test), s)


def test_excluded_features_are_not_read(rows, tmp_path):
    """`exclude_features` drops an input from the model (a saved model keeps it out);
    a feature whose table a sequence shares cannot be dropped."""
    cands, label, is_test, _ = rows
    model = _fit("widedeep", rows, exclude_features=["user_id"])
    assert "user_id" not in model.features and "item_id" in model.features
    te = np.flatnonzero(is_test)
    test = cands.take(te)
    s = model.score(test)
    shuffled = test.take(np.arange(len(test)))
    shuffled.features["user_id"] = np.random.default_rng(2).permutation(shuffled.features["user_id"])
    np.testing.assert_array_equal(model.score(shuffled), s)
    model.save(tmp_path / "x")
    assert "user_id" not in type(model).load(tmp_path / "x").features
    with pytest.raises(ValueError, match="shares its embedding table"):
        _fit("widedeep", rows, exclude_features=["item_id"])
    with pytest.raises(ValueError, match="no such features"):
        _fit("widedeep", rows, exclude_features=["nope"])


def test_query_batches_keep_queries_whole():
    from recfunnel.rank.neural import _query_batches, _query_softmax_loss, _rows_by_query

    q = np.repeat(np.arange(50), 7)[np.random.default_rng(0).permutation(350)]
    groups = _rows_by_query(q, np.arange(350))
    batches = _query_batches(groups, np.random.default_rng(1), 40)
    assert sorted(np.concatenate(batches).tolist()) == list(range(350))
    seen = [set(q[b].tolist()) for b in batches]
    assert all(not (a & b) for i, a in enumerate(seen) for b in seen[i + 1 :])  # no query split
    # the loss is the mean of -log softmax over each query's rows
    import torch

    logits = torch.tensor([1.0, 2.0, 0.0, 3.0, 1.0])
    y = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0])
    qq = torch.tensor([0, 0, 0, 5, 5])
    want = (-torch.log_softmax(logits[:3], 0)[0] - torch.log_softmax(logits[3:], 0)[1]) / 2
    assert torch.isclose(_query_softmax_loss(logits, y, qq), want)


@pytest.mark.parametrize("name", ["mmoe", "shared_bottom"])
def test_multi_task_heads_learn_two_planted_targets(name, rows):
    """Head 0: the item taken next; head 1: a planted 'like' of its own (items of even
    categories). Each head must be the better predictor of its own target."""
    cands, label, is_test, _ = rows
    like = (cands.features["item_cat"] % 2 == 0).astype(np.float32)
    model = _fit(name, rows, like=like, fusion_interact=1.0, fusion_like=0.25)
    te = np.flatnonzero(is_test)
    test = cands.take(te)
    p = model.head_probabilities(test)
    assert p.shape == (len(te), 2)
    assert auc(like[te], p[:, 1]) > 0.95
    assert auc(like[te], p[:, 1]) > auc(like[te], p[:, 0]) + 0.1
    assert auc(label[te], p[:, 0]) > auc(label[te], p[:, 1]) + 0.1
    # the ranking value: log-odds of the weighted mean of the heads (same order as the weighted sum)
    mean = (p[:, 0] + 0.25 * p[:, 1]) / 1.25
    np.testing.assert_allclose(model.score(test), np.log(mean / (1 - mean)), rtol=1e-4, atol=1e-4)


def test_funnel_with_a_neural_ranker_round_trips(planted_split, tmp_path):
    """The funnel trains a neural ranker on its own recall (with the like label), serves it
    through the same `run`, and a saved funnel answers identically after loading."""
    from recfunnel.config import FunnelConfig
    from recfunnel.funnel import Funnel
    from recfunnel.query import history_queries

    split, _ = planted_split
    cfg = FunnelConfig()
    cfg.merge.pool_size = 100
    cfg.rank.model = "deepfm"
    cfg.rank.max_train_queries = 400
    cfg.rank.negatives_per_query = 30
    cfg.rank.random_negatives_per_query = 10  # easy negatives next to the pool's hard ones
    cfg.rank.deepfm = small("deepfm").config
    cfg.rerank.preset = "none"
    funnel = Funnel(cfg).fit(split.fit, progress=False)
    assert funnel.pit is not None and funnel.ranker is not None
    assert funnel.ranker_report["model:holdout_auc"] > 0.7
    batch = QueryBatch(history_queries(split.fit, split.users[:50], split.ts[:50]), split.fit.n_items)
    first = funnel.run(batch, keep_stages=True)
    assert "hist_items" in first.ranked.features and first.ranked.features["hist_items"].shape[1] == 20
    funnel.save(tmp_path / "f")
    again = Funnel.load(tmp_path / "f").run(batch)
    np.testing.assert_array_equal(again.final.item, first.final.item)
    np.testing.assert_array_equal(again.final.score, first.final.score)


def test_frequency_penalty_weighs_rare_ids_in_the_batch(rows):
    """DIN's mini-batch aware L2: an id absent from the batch costs nothing, a rare id costs
    more than a frequent one of the same norm; a ranker trained with it still learns."""
    import torch

    from recfunnel.rank.nets import FieldEmbeddings

    _, _, _, specs = rows
    emb = FieldEmbeddings(specs, 4)
    for t in list(emb.tables.values()) + list(emb.weights.values()):
        torch.nn.init.constant_(t.weight, 1.0)
    n_seq = {s.name: torch.zeros((2, s.length), dtype=torch.int64) for s in specs.sequence}
    sparse = torch.zeros((2, len(specs.sparse)), dtype=torch.int64)
    j = emb.sparse_names.index("item_id")
    sparse[:, j] = torch.tensor([1, 2])
    train_x = {"sparse": sparse.repeat(3, 1), "dense": torch.zeros((6, len(specs.dense))), **{k: v.repeat(3, 1) for k, v in n_seq.items()}}
    train_x["sparse"][:, j] = torch.tensor([1, 1, 1, 1, 2, 2])  # item 1 four times, item 2 twice
    emb.count_ids(train_x)
    one = lambda item: {"sparse": sparse[:1].clone().index_fill_(1, torch.tensor([j]), item), "dense": torch.zeros((1, len(specs.dense))), **{k: v[:1] for k, v in n_seq.items()}}  # noqa: E731
    with torch.no_grad():
        frequent, rare, absent = (float(emb.frequency_penalty(one(i))) for i in (1, 2, 0))
    assert rare == pytest.approx(5 / 2) and frequent == pytest.approx(5 / 4)  # (4 + 1) / count
    assert absent == 0.0

    cands, label, is_test, _ = rows
    te = np.flatnonzero(is_test)
    test = cands.take(te)
    model = _fit("din", rows, embedding_l2=0.05)
    popular = gauc(label[te], test.features["pit_item_count"], test.query)
    assert gauc(label[te], model.score(test), test.query) > popular + 0.08


def test_members_average_nets_trained_from_different_seeds(rows, tmp_path):
    """`members = 2`: two nets from seeds 0 and 1, logits averaged; saved and loaded whole."""
    cands, label, is_test, _ = rows
    te = np.flatnonzero(is_test)
    test = cands.take(te)
    pair = _fit("widedeep", rows, members=2)
    one = _fit("widedeep", rows)
    assert len(pair.net.members) == 2
    x = pair._inputs(test)
    import torch

    with torch.no_grad():
        first, second = (m(x).numpy() for m in pair.net.members)
        np.testing.assert_allclose(pair.net(x).numpy(), (first + second) / 2, rtol=1e-5)
        np.testing.assert_allclose(first, one.net(x).numpy(), rtol=1e-5)  # member 0 is the seed-0 net
    assert not np.allclose(first, second)  # member 1 starts from seed 1 and sees other batches
    popular = gauc(label[te], test.features["pit_item_count"], test.query)
    s = pair.score(test)
    assert gauc(label[te], s, test.query) > popular + 0.08
    pair.save(tmp_path / "pair")
    np.testing.assert_array_equal(type(pair).load(tmp_path / "pair").score(test), s)


def test_din_item_bias_adds_the_candidate_items_own_weight(rows):
    """`item_bias`: the candidate item's first-order weight joins DIN's logit (the authors'
    item_b); without it that weight is not read."""
    import torch

    cands, label, is_test, _ = rows
    te = np.flatnonzero(is_test)
    test = cands.take(te)
    for on in (True, False):
        model = _fit("din", rows, item_bias=on)
        x = model._inputs(test)
        item = int(test.features["item_id"][0])
        with torch.no_grad():
            before = model.net(x)[:, 0].numpy()
            model.net.emb.weights["item_id"].weight[item] += 1.0
            after = model.net(x)[:, 0].numpy()
        hit = test.features["item_id"] == item
        np.testing.assert_allclose(after[hit] - before[hit], 1.0 if on else 0.0, atol=1e-5)
        np.testing.assert_allclose(after[~hit], before[~hit], atol=1e-6)


def test_din_attention_softmax_makes_the_interest_a_weighted_mean(rows):
    """`attention_softmax`: the interest is a convex mix of the history, so a history of one
    item repeated gives that item's vector whatever the length; unnormalised, it scales."""
    import torch

    from recfunnel.rank.nets import _history

    cands, label, is_test, _ = rows
    test = cands.take(np.flatnonzero(is_test))
    for on in (True, False):
        model = _fit("din", rows, attention_softmax=on)
        x = model._inputs(test)
        with torch.no_grad():
            hist, mask, cand = _history(model.net.emb, x)
            same = hist[:, :1].expand_as(hist)  # every step the row's latest step
            got = model.net.interest(same, torch.ones_like(mask), cand)
        close = torch.allclose(got, same[:, 0], atol=1e-5)
        assert close == on


def test_din_recency_keys_make_the_interest_depend_on_order(rows, tmp_path):
    """`recency_keys`: the attention unit reads each step plus an embedding of its recency, so
    the same items in another order give another interest; without it the interest is a sum
    over steps, blind to order. The learned recency table saves and loads with the weights."""
    import torch

    from recfunnel.rank.nets import _history

    cands, label, is_test, _ = rows
    te = np.flatnonzero(is_test)
    test = cands.take(te)
    for on in (True, False):
        model = _fit("din", rows, recency_keys=on)
        x = model._inputs(test)
        with torch.no_grad():
            hist, mask, cand = _history(model.net.emb, x)
            full = torch.ones_like(mask)
            moved = (model.net.interest(hist.flip(1), full, cand) - model.net.interest(hist, full, cand)).abs().max()
        assert (moved > 1e-4) if on else (moved < 1e-5), (on, moved)
        if on:
            popular = gauc(label[te], test.features["pit_item_count"], test.query)
            assert gauc(label[te], model.score(test), test.query) > popular + 0.08
            model.save(tmp_path / "din")
            np.testing.assert_array_equal(type(model).load(tmp_path / "din").score(test), model.score(test))


@pytest.mark.parametrize("name", ["din", "dien"])
def test_history_product_feeds_the_mlp_the_pooled_history(name, rows, tmp_path):
    """`history_product`: with the attended interest held fixed, the history still reaches the
    score through its mean and that mean's product with the candidate; without it, it cannot.
    The model still learns, and saves and loads with the extra inputs."""
    import torch

    from recfunnel.rank.nets import _history

    cands, label, is_test, _ = rows
    te = np.flatnonzero(is_test)
    test = cands.take(te)
    for on in (True, False):
        model = _fit(name, rows, history_product=on)
        if on:
            popular = gauc(label[te], test.features["pit_item_count"], test.query)
            assert gauc(label[te], model.score(test), test.query) > popular + 0.08
            model.save(tmp_path / name)
            np.testing.assert_array_equal(type(model).load(tmp_path / name).score(test), model.score(test))
        x = model._inputs(test)
        with torch.no_grad():
            hist, mask, cand = _history(model.net.emb, x)
            interest = torch.zeros_like(cand)  # the attended part held fixed
            before = model.net.deep_logit(x, interest, hist, mask, cand)
            after = model.net.deep_logit(x, interest, hist.roll(1, 0), mask.roll(1, 0), cand)  # others' histories
        moved = (after - before).abs().max().item()
        assert (moved > 1e-3) if on else (moved < 1e-5), (name, on, moved)


@pytest.mark.parametrize("name", ["din", "dien"])
def test_dice_activation_learns_and_round_trips(name, rows, tmp_path):
    """`activation = "dice"`: the attention unit and MLP use DIN's Dice; its batch-norm
    statistics are saved with the weights and, with weight averaging, are the averaged weights' own."""
    import torch

    from recfunnel.rank.nets import Dice

    cands, label, is_test, specs = rows
    te = np.flatnonzero(is_test)
    test = cands.take(te)
    tr = np.flatnonzero(~is_test)
    model = small(name, activation="dice")
    model.config.train.ema_decay = 0.99
    model.fit(cands.take(tr), label[tr], specs.dense, specs=specs)
    dice = [m for m in model.net.modules() if isinstance(m, Dice)]
    assert len(dice) == 1 + 2  # one in the attention unit's hidden layer, two in the MLP
    assert all(float(d.norm.running_var.sub(1).abs().max()) > 0 for d in dice)  # statistics were kept
    s = model.score(test)
    popular = gauc(label[te], test.features["pit_item_count"], test.query)
    assert gauc(label[te], s, test.query) > popular + 0.08
    model.save(tmp_path / name)
    again = type(model).load(tmp_path / name)
    np.testing.assert_array_equal(again.score(test), s)
    with torch.no_grad():
        x = torch.tensor([[-2.0, 0.5], [1.0, 3.0], [0.0, -1.0]])
        d = Dice(2)
        d.alpha.fill_(0.25)
        p = torch.sigmoid((x - x.mean(0)) / x.var(0, unbiased=False).sqrt())
        torch.testing.assert_close(d(x), p * x + (1 - p) * 0.25 * x)
