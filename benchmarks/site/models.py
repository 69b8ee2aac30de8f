from django.db import models

from . import TABLE


class Row(models.Model):
    id = models.BigAutoField(primary_key=True)
    owner = models.IntegerField()
    body = models.TextField()

    class Meta:
        managed = False
        db_table = TABLE


class Item(models.Model):
    """``benchmarks.concurrency``'s rows (its server creates the table)."""

    name = models.CharField(max_length=100)
