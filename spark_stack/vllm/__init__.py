"""vLLM knowledge: the options of `vllm serve` by release (packaged data + a checker)."""
