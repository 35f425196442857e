.PHONY: model
model: ## Prepare MODEL under models/ (placeholder until the models work lands)
	@echo "model: $(MODEL) (not implemented yet)"
