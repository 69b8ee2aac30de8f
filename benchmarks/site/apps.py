from django.apps import AppConfig


class BenchSiteConfig(AppConfig):
    name = "benchmarks.site"
    label = "bench_site"
