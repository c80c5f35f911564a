from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone


class Segment(models.Model):
    """A named audience: a rule tree (dynamic) or an uploaded list (static)."""

    class Kind(models.TextChoices):
        DYNAMIC = "dynamic", "Dynamic (rules)"
        STATIC = "static", "Static (list)"

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.DYNAMIC)
    rules = models.JSONField(
        default=dict, blank=True, help_text='For example {"all": [{"field": "country", "op": "eq", "value": "PL"}]}'
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from segments.rules import RuleError, validate

        if self.kind == self.Kind.DYNAMIC:
            try:
                validate(self.rules, segment_id=self.pk)
            except RuleError as exc:
                raise ValidationError({"rules": str(exc)}) from None


class SegmentMember(models.Model):
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="members")
    customer = models.ForeignKey("customers.Customer", on_delete=models.CASCADE, related_name="+")
    added_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["segment", "customer"], name="segment_member_unique")]

    def __str__(self) -> str:
        return f"{self.customer_id} in {self.segment_id}"
