-- Upstream defect public_writable (applied after sound.sql).
-- Breaks: PUBLIC may write pgGit's records, as in upstream pgGit (v0.2.1 and cb54478): every
-- table of schema pggit grants SELECT, INSERT, UPDATE to PUBLIC (history and commits can be
-- forged by any role that can connect), and schema pggit_branches grants CREATE to PUBLIC.

GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA pggit TO PUBLIC;
CREATE SCHEMA pggit_branches;
GRANT USAGE, CREATE ON SCHEMA pggit_branches TO PUBLIC;
