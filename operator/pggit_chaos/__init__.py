"""pggit-chaos: chaos engineering for PostgreSQL databases that run pgGit."""

__version__ = "0.1.0"
