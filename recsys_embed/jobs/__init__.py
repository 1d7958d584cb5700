"""Floor 4, the jobs: the Trainer, run configs, builders, artifacts of whole models, the CTR
(:mod:`.ctr`) and sequential (:mod:`.sequential`) jobs, sharding and the CLI. Nothing imports them."""
