"""Kubernetes: the substrate and its faults, the pure builders, the API client, the operator.

Layers (import-linter keeps them): ``names`` and ``builders`` are pure data; ``client`` talks to
the API server; ``faults`` and ``substrate`` implement the engine's protocols with the client;
``runner`` runs one experiment inside its runner Job; ``handlers`` hold the operator's work and
``operator`` only the kopf registrations. The engine never imports this package.
"""
