"""The budget: parsing a constraint ("75%"), counting parameters and the fitted FLOP model."""
