from typing import Any

from django.db import models


class Invoice(models.Model):
    """Lives on the ``billing`` primary (``MULTIDB_PRIMARY_FOR``)."""

    customer = models.CharField(max_length=100)
    amount = models.DecimalField(max_digits=10, decimal_places=2)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.customer}: {self.amount}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.pk,
            "customer": self.customer,
            "amount": str(self.amount),
            "created": self.created.isoformat(),
        }
