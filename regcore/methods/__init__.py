"""Registration methods: the shared interface (base), the registry, classical and learned families."""
