-- The page of bench/page.py for PostGraphile 5 (bench/page.py --postgraphile): views over the same tables and a
-- function for a member's page. Nothing here is part of Threadline's schema; the bench creates it in its own database.
DROP SCHEMA IF EXISTS pgl_bench CASCADE;
CREATE SCHEMA pgl_bench;

CREATE VIEW pgl_bench.app_user AS SELECT id, tenant_id, email FROM public.app_user;
COMMENT ON VIEW pgl_bench.app_user IS E'@primaryKey id';

CREATE VIEW pgl_bench.conversation AS
  SELECT id, tenant_id, owner_id, title, tags, status, message_count, last_activity_at FROM public.conversation;
COMMENT ON VIEW pgl_bench.conversation IS E'@primaryKey id\n@foreignKey (owner_id) references pgl_bench.app_user (id)|@fieldName owner';

CREATE VIEW pgl_bench.participant AS
  SELECT id, tenant_id, conversation_id, user_id, role, joined_at FROM public.participant;
COMMENT ON VIEW pgl_bench.participant IS
  E'@primaryKey id\n@foreignKey (conversation_id) references pgl_bench.conversation (id)|@foreignFieldName participants\n@foreignKey (user_id) references pgl_bench.app_user (id)|@fieldName user';

-- The app's filter for a MEMBER: the tenant's active conversations they take part in, most recent activity first.
CREATE FUNCTION pgl_bench.member_conversations(tenant uuid, member uuid) RETURNS SETOF pgl_bench.conversation
LANGUAGE sql STABLE AS $$
  SELECT c.* FROM pgl_bench.conversation c
  WHERE c.tenant_id = tenant AND c.status = 'ACTIVE'
    AND c.id IN (SELECT p.conversation_id FROM public.participant p WHERE p.user_id = member)
  ORDER BY c.last_activity_at DESC, c.id DESC
$$;
