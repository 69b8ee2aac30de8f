from django.db import models


class Invoice(models.Model):
    number = models.IntegerField()
    note = models.CharField(max_length=100, blank=True)
