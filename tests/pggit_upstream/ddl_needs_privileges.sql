-- Upstream defect ddl_needs_privileges (applied after sound.sql).
-- Breaks: the event trigger functions run as the caller (SECURITY INVOKER), as in upstream pgGit
-- (v0.2.1 and cb54478): DDL by a role that is no superuser fails inside pgGit's trigger
-- (permission denied for schema pggit; upstream, whose tables PUBLIC may write, fails on
-- "permission denied for sequence objects_id_seq") — ordinary roles cannot CREATE TABLE.

ALTER FUNCTION pggit.handle_ddl_command() SECURITY INVOKER;
ALTER FUNCTION pggit.handle_sql_drop() SECURITY INVOKER;
