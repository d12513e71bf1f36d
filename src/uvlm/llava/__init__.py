"""Table 2: the LLaVA-1.5 case (data, models, two-stage training, benchmarks)."""
