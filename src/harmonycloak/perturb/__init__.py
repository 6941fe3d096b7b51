"""The cloak engine: budgets from the masking model, parametrized perturbations, the
channel between artist and scraper, and the bi-level min-min optimization."""
