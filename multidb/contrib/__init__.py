"""Optional integrations.  Nothing here is imported unless a site imports it:
``import multidb`` never loads Celery or a tasks framework."""
