"""Floor 4, the jobs: the Trainer and the models it trains (:mod:`.ranking_model` for CTR,
:mod:`.next_item_model` for next-item ranking), run configs, builders, artifacts of whole models
(:mod:`.model_io`, one for every task), the CTR (:mod:`.ctr`) and sequential (:mod:`.sequential`)
jobs, post-training quantization of saved models (:mod:`.quantize`), sharding and the CLI. Nothing imports them."""
