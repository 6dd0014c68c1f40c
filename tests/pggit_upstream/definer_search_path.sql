-- Upstream defect definer_search_path (applied after sound.sql).
-- Breaks: generate_trinity_id() is SECURITY DEFINER (runs as the installing superuser) with no
-- pinned search_path, and PUBLIC may execute it, as in upstream pgGit v0.2.1: a role that puts
-- a schema of its own first in search_path has its own functions run as the superuser.

ALTER FUNCTION pggit.generate_trinity_id() SECURITY DEFINER;
ALTER FUNCTION pggit.generate_trinity_id() RESET search_path;
GRANT EXECUTE ON FUNCTION pggit.generate_trinity_id() TO PUBLIC;
