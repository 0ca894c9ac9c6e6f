"""Fewer indexes on the event log, which impressions fill: four of its nine indexes were written
by every impression row and read by nothing the others do not serve (docs/BENCHMARKS.md,
Serving, eighth session). The partial indexes are built concurrently, so a live table keeps
taking writes; dropping the old ones is quick."""

from django.conf import settings
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('matching', '0008_embeddingset_retired'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='interaction',
            index=models.Index(condition=models.Q(('target_activity__isnull', False)), fields=['target_activity'], name='interaction_target_activity'),
        ),
        AddIndexConcurrently(
            model_name='interaction',
            index=models.Index(condition=models.Q(('target_venue__isnull', False)), fields=['target_venue'], name='interaction_target_venue'),
        ),
        migrations.AlterField(
            model_name='interaction',
            name='actor',
            field=models.ForeignKey(db_index=False, on_delete=models.deletion.CASCADE, related_name='interactions', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AlterField(
            model_name='interaction',
            name='target_user',
            field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=models.deletion.CASCADE, related_name='interactions_received', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AlterField(
            model_name='interaction',
            name='target_activity',
            field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=models.deletion.CASCADE, related_name='+', to='activities.activity'),
        ),
        migrations.AlterField(
            model_name='interaction',
            name='target_venue',
            field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=models.deletion.CASCADE, related_name='+', to='activities.venue'),
        ),
    ]
