"""Re-ranking: filters and selectors applied to the ranked list.

- `config`     the typed settings (one section per rule)
- `catalog`    item arrays the rules read (categories, price, availability, groups, ...)
- `filters`    remove: seen, recently served, blacklist, unavailable, audience, group dedupe
- `selectors`  order: sinks, ratio caps, scattering, fixed slots, channel interleaving
- `diversity`  MMR and DPP (fast greedy MAP)
- `explore`    Thompson-sampling and LinUCB explorers with propensities
- `ope`        off-policy estimators (IPS, SNIPS, DR) with bootstrap intervals
- `reranker`   `Reranker`, the stage `Funnel.run` calls
"""
