"""Members, the channels they deal through, and the ledger of their activity."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from members.privacy import member_label


def default_language() -> str:
    """Return settings.LANGUAGE_CODE, the language of a new member's messages."""
    # A callable, so that migrations do not freeze the value of LANGUAGE_CODE
    # at the time they were generated.
    return settings.LANGUAGE_CODE


class Channel(models.Model):
    """A place where members buy or interact: a store, a web shop, a social app."""

    class Kind(models.TextChoices):
        STORE = "store", _("Store")
        ECOMMERCE = "ecommerce", _("E-commerce")
        SOCIAL = "social", _("Social")
        OTHER = "other", _("Other")

    code = models.CharField(
        _("code"),
        max_length=64,
        unique=True,
        help_text=_("The channel's name in import files, e.g. store-xuhui or tmall."),
    )
    name = models.CharField(_("name"), max_length=120)
    kind = models.CharField(_("kind"), max_length=16, choices=Kind, default=Kind.OTHER)
    match_phone = models.BooleanField(
        _("match by phone"),
        default=False,
        help_text=_(
            "When an id from this channel is new, link it to the one member with "
            "the same normalised phone instead of creating a member."
        ),
    )
    match_email = models.BooleanField(
        _("match by e-mail"),
        default=False,
        help_text=_(
            "When an id from this channel is new, link it to the one member with "
            "the same e-mail address instead of creating a member."
        ),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        ordering = ["code"]
        verbose_name = _("channel")
        verbose_name_plural = _("channels")

    def __str__(self) -> str:
        return self.name or self.code


class Member(models.Model):
    public_id = models.UUIDField(
        default=uuid.uuid4,
        unique=True,
        editable=False,
        help_text=_("Random id used in signed member page links, never shown."),
    )
    name = models.CharField(_("name"), max_length=200, blank=True)
    phone = models.CharField(
        _("phone"), max_length=40, blank=True, help_text=_("As given by the member.")
    )
    phone_e164 = models.CharField(
        _("phone (E.164)"),
        max_length=20,
        blank=True,
        db_index=True,
        help_text=_(
            "Normalised form used for matching; empty if the phone is invalid."
        ),
    )
    email = models.EmailField(_("e-mail"), blank=True, db_index=True)
    language = models.CharField(
        _("language"),
        max_length=10,
        choices=settings.LANGUAGES,
        default=default_language,
        help_text=_("The language of the messages the member receives."),
    )
    joined_on = models.DateField(_("joined on"), null=True, blank=True)
    tier = models.ForeignKey(
        "tiers.Tier",
        verbose_name=_("tier"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="members",
    )
    tier_since = models.DateTimeField(_("tier since"), null=True, blank=True)
    review_at = models.DateTimeField(
        _("next review"),
        null=True,
        blank=True,
        db_index=True,
        help_text=_("When the member's hold on the tier is reviewed; empty if never."),
    )
    grace_until = models.DateTimeField(
        _("grace until"),
        null=True,
        blank=True,
        help_text=_("Set after a failed review: the drop waits until then."),
    )
    merged_into = models.ForeignKey(
        "self",
        verbose_name=_("merged into"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="merged_members",
        help_text=_(
            "Set when staff merged this member into another; its activity moved "
            "there and it is no longer evaluated."
        ),
    )
    erased_at = models.DateTimeField(
        _("erased at"),
        null=True,
        blank=True,
        help_text=_(
            "Set when the member's personal data was erased; the activities stay "
            "under this pseudonymous row for accounting."
        ),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["pk"]
        verbose_name = _("member")
        verbose_name_plural = _("members")
        permissions = [
            ("import", _("Can import members and activities")),
            ("export", _("Can export members and activities")),
            (
                "view_personal_data",
                _("Can view members' names, phones and e-mails unmasked"),
            ),
            ("erase_member", _("Can erase a member's personal data")),
        ]

    def __str__(self) -> str:
        # Masked for everyone: this text appears in foreign key widgets,
        # history pages, breadcrumbs and logs, where no permission is checked.
        # TODO: admin LogEntry rows written before names were masked still
        # store the full name in object_repr; a data migration should mask them.
        return member_label(self.name, self.pk)


class ChannelIdentity(models.Model):
    """A member's id in one channel: a card number, a shop account, an OpenID."""

    member = models.ForeignKey(
        Member, on_delete=models.CASCADE, related_name="identities"
    )
    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, related_name="+")
    # Text, never a number: "00001" and "1" are different members.
    external_id = models.CharField(_("id in channel"), max_length=64)
    import_batch = models.ForeignKey(
        "ImportBatch",
        verbose_name=_("import batch"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="identities",
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("channel identity")
        verbose_name_plural = _("channel identities")
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "external_id"], name="identity_unique_in_channel"
            ),
            models.CheckConstraint(
                condition=~Q(external_id=""), name="identity_external_id_not_empty"
            ),
        ]
        indexes = [models.Index(fields=["external_id"], name="identity_external_id")]

    def __str__(self) -> str:
        return f"{self.channel.code}:{self.external_id}"


class ActivityKind(models.Model):
    """A kind of ledger event. The role decides which metrics it feeds."""

    class Role(models.TextChoices):
        PURCHASE = "purchase", _("Purchase")
        REFUND = "refund", _("Refund")
        VISIT = "visit", _("Visit")
        REVIEW = "review", _("Review")
        REFERRAL = "referral", _("Referral")
        OPENING = "opening", _("Opening balance")
        OTHER = "other", _("Other")

    code = models.SlugField(_("code"), max_length=40, unique=True)
    name = models.CharField(_("name"), max_length=80)
    role = models.CharField(_("role"), max_length=16, choices=Role, default=Role.OTHER)

    class Meta:
        ordering = ["code"]
        verbose_name = _("activity kind")
        verbose_name_plural = _("activity kinds")

    def __str__(self) -> str:
        return self.name


class Activity(models.Model):
    """One event in the ledger. (channel, reference) makes every event count once."""

    class Source(models.TextChoices):
        IMPORT = "import", _("Import")
        API = "api", _("API")
        ADMIN = "admin", _("Admin")
        MIGRATION = "migration", _("Migration from an earlier program")

    member = models.ForeignKey(
        Member, on_delete=models.PROTECT, related_name="activities"
    )
    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, related_name="+")
    kind = models.ForeignKey(ActivityKind, on_delete=models.PROTECT, related_name="+")
    occurred_at = models.DateTimeField(_("occurred at"))
    # Refunds are stored negative, so net spend is a plain sum.
    amount = models.DecimalField(
        _("amount"), max_digits=14, decimal_places=2, default=0
    )
    quantity = models.IntegerField(_("quantity"), default=1)
    reference = models.CharField(
        _("reference"),
        max_length=100,
        help_text=_("The channel's own id for this event, unique within the channel."),
    )
    growth_points = models.DecimalField(
        _("growth value carried over"),
        max_digits=14,
        decimal_places=2,
        default=0,
        # Also a database default: the event API inserts rows with SQL.
        db_default=0,
        help_text=_(
            "Growth value brought from an earlier program; only opening "
            "balances have it."
        ),
    )
    source = models.CharField(
        _("source"), max_length=16, choices=Source, default=Source.ADMIN
    )
    import_batch = models.ForeignKey(
        "ImportBatch",
        verbose_name=_("import batch"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="activities",
    )
    import_line = models.PositiveIntegerField(_("line in file"), null=True, blank=True)
    recorded_at = models.DateTimeField(_("recorded at"), auto_now_add=True)

    class Meta:
        verbose_name = _("activity")
        verbose_name_plural = _("activities")
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "reference"], name="activity_unique_reference"
            ),
            models.CheckConstraint(
                condition=~Q(reference=""), name="activity_reference_not_empty"
            ),
        ]
        indexes = [
            models.Index(fields=["member", "occurred_at"], name="activity_member_time"),
        ]

    def __str__(self) -> str:
        return f"{self.reference} ({self.occurred_at:%Y-%m-%d})"


class OutboxMessage(models.Model):
    """A notification to one member on one channel, and its delivery state.

    members.notifications creates these, and members.jobs.send_due_messages
    sends the pending ones. (key, channel) is unique, so creating the same
    event's message again does nothing.
    """

    class Topic(models.TextChoices):
        PROMOTION = "promotion", _("Promotion")
        DEMOTION = "demotion", _("Demotion")
        BENEFIT_ISSUED = "benefit_issued", _("Benefit issued")
        BENEFIT_EXPIRING = "benefit_expiring", _("Benefit expiring")
        REVIEW_WARNING = "review_warning", _("Review warning")
        NUDGE = "nudge", _("Progress reminder")

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")
        SKIPPED = "skipped", _("Skipped: no address on this channel")
        FAILED = "failed", _("Failed permanently")

    member = models.ForeignKey(
        Member,
        verbose_name=_("member"),
        on_delete=models.CASCADE,
        related_name="outbox_messages",
    )
    channel = models.CharField(
        _("channel"),
        max_length=32,
        help_text=_("The delivery backend, e.g. in_app, email or webhook."),
    )
    topic = models.CharField(_("topic"), max_length=32, choices=Topic)
    key = models.CharField(
        _("key"),
        max_length=200,
        help_text=_(
            "The event this message is about, e.g. tier-change:12. Also sent "
            "as the webhook's Idempotency-Key header."
        ),
    )
    params = models.JSONField(
        _("parameters"),
        encoder=DjangoJSONEncoder,
        default=dict,
        help_text=_("The values the subject and body are rendered from."),
    )
    language = models.CharField(
        _("language"), max_length=10, choices=settings.LANGUAGES
    )
    status = models.CharField(
        _("status"), max_length=16, choices=Status, default=Status.PENDING
    )
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt at"), default=timezone.now)
    # Random id of the sender run that claimed the message, and when. A claim
    # older than CRM_NOTIFICATION_CLAIM_TIMEOUT_SECONDS counts as abandoned.
    claim_token = models.CharField(_("claim token"), max_length=32, blank=True)
    claimed_at = models.DateTimeField(_("claimed at"), null=True, blank=True)
    last_error = models.CharField(
        _("last error"),
        max_length=500,
        blank=True,
        help_text=_("Why the last attempt failed; never contains personal data."),
    )
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        # Newest first through the primary key index, which follows creation order.
        ordering = ["-pk"]
        verbose_name = _("outbox message")
        verbose_name_plural = _("outbox messages")
        constraints = [
            models.UniqueConstraint(
                fields=["key", "channel"], name="outboxmessage_unique_key_channel"
            ),
            models.CheckConstraint(
                condition=~Q(key=""), name="outboxmessage_key_not_empty"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="outbox_due"),
            models.Index(
                fields=["member", "channel", "-created_at"], name="outbox_member"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.channel})"


class ChannelToken(models.Model):
    """A secret that lets one channel's systems call the event API.

    Only the SHA-256 hash of the token is stored, and the token itself is
    shown once, by the create_channel_token command. ``prefix`` is the
    token's public first part, which finds the row before the hash is
    compared. A token acts for its channel only.
    """

    channel = models.ForeignKey(
        Channel,
        verbose_name=_("channel"),
        on_delete=models.CASCADE,
        related_name="api_tokens",
    )
    name = models.CharField(
        _("name"),
        max_length=100,
        help_text=_("What uses the token, e.g. the Xuhui store tills."),
    )
    prefix = models.CharField(_("prefix"), max_length=16, unique=True, editable=False)
    token_hash = models.CharField(_("token hash"), max_length=64, editable=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True)
    revoked_at = models.DateTimeField(
        _("revoked at"),
        null=True,
        blank=True,
        help_text=_("Requests with a revoked token are rejected with status 401."),
    )

    class Meta:
        ordering = ["channel__code", "name"]
        verbose_name = _("channel API token")
        verbose_name_plural = _("channel API tokens")
        constraints = [
            models.CheckConstraint(
                condition=~Q(prefix=""), name="channeltoken_prefix_not_empty"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class IdempotencyRecord(models.Model):
    """The stored response to an event API request sent with an Idempotency-Key.

    A request that repeats a channel's key with the same body gets this
    response again, and nothing is recorded twice. ``request_hash`` is the
    SHA-256 of the request's path and body.
    """

    channel = models.ForeignKey(
        Channel, verbose_name=_("channel"), on_delete=models.CASCADE, related_name="+"
    )
    key = models.CharField(_("idempotency key"), max_length=255)
    request_hash = models.CharField(_("request hash"), max_length=64)
    status_code = models.PositiveSmallIntegerField(_("status code"))
    response_body = models.JSONField(
        _("response body"), encoder=DjangoJSONEncoder, default=dict
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("idempotency record")
        verbose_name_plural = _("idempotency records")
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "key"], name="idempotency_unique_channel_key"
            ),
            models.CheckConstraint(
                condition=~Q(key=""), name="idempotency_key_not_empty"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel_id}:{self.key}"


class ImportKind(models.TextChoices):
    MEMBERS = "members", _("Members")
    ACTIVITIES = "activities", _("Activities")
    OPENING_BALANCES = "opening_balances", _("Opening balances")


class ColumnMapping(models.Model):
    """The headers of one channel's export files, kept for its next import.

    ``columns`` maps each import column (external_id, amount…) to the header
    the channel's files use for it.
    """

    channel = models.ForeignKey(
        Channel,
        verbose_name=_("channel"),
        on_delete=models.CASCADE,
        related_name="column_mappings",
    )
    kind = models.CharField(_("file kind"), max_length=20, choices=ImportKind)
    columns = models.JSONField(_("columns"), default=dict, blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("updated by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["channel__code", "kind"]
        verbose_name = _("column mapping")
        verbose_name_plural = _("column mappings")
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "kind"], name="columnmapping_unique_channel_kind"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel_id}:{self.kind}"


class ImportBatch(models.Model):
    """One imported file: who imported it, what it did, and whether it was undone.

    Every activity, identity and member an import creates or changes points
    back to its batch, so the whole batch can be rolled back in one step.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        CHECKING = "checking", _("Checking")
        CHECKED = "checked", _("Checked, waiting for confirmation")
        RUNNING = "running", _("Importing")
        APPLIED = "applied", _("Imported")
        REFUSED = "refused", _("Refused")
        FAILED = "failed", _("Failed")
        ROLLED_BACK = "rolled_back", _("Rolled back")

    kind = models.CharField(_("file kind"), max_length=20, choices=ImportKind)
    status = models.CharField(
        _("status"),
        max_length=16,
        choices=Status,
        default=Status.QUEUED,
        db_index=True,
    )
    file_name = models.CharField(_("file name"), max_length=255, blank=True)
    file_sha256 = models.CharField(
        _("file SHA-256"), max_length=64, blank=True, db_index=True
    )
    file_size = models.PositiveBigIntegerField(_("file size"), default=0)
    upload = models.FileField(
        _("stored file"),
        upload_to="imports/%Y/%m/",
        blank=True,
        help_text=_("Kept while a background import needs it."),
    )
    channel = models.ForeignKey(
        Channel,
        verbose_name=_("channel"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text=_("The channel whose saved column mapping the import used."),
    )
    options = models.JSONField(
        _("options"),
        default=dict,
        blank=True,
        help_text=_("Choices staff made: encoding, date order, decimal mark."),
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("imported by"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    total_rows = models.PositiveIntegerField(_("rows"), default=0)
    processed_rows = models.PositiveIntegerField(_("rows processed"), default=0)
    created_count = models.PositiveIntegerField(_("created"), default=0)
    updated_count = models.PositiveIntegerField(_("updated"), default=0)
    unchanged_count = models.PositiveIntegerField(_("unchanged"), default=0)
    already_imported_count = models.PositiveIntegerField(
        _("already imported"), default=0
    )
    duplicate_count = models.PositiveIntegerField(_("duplicates"), default=0)
    rejected_count = models.PositiveIntegerField(_("rejected"), default=0)
    message = models.TextField(
        _("message"), blank=True, help_text=_("Why the file was refused or failed.")
    )
    rolled_back_at = models.DateTimeField(_("rolled back at"), null=True, blank=True)
    rolled_back_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("rolled back by"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    rollback_summary = models.JSONField(_("rollback summary"), default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = _("import batch")
        verbose_name_plural = _("import batches")

    def __str__(self) -> str:
        return f"#{self.pk} {self.file_name}"


class ImportIssue(models.Model):
    """A line of an import that was rejected or skipped, with the reason."""

    batch = models.ForeignKey(
        ImportBatch,
        verbose_name=_("import batch"),
        on_delete=models.CASCADE,
        related_name="issues",
    )
    line = models.PositiveIntegerField(_("line"))
    column = models.CharField(_("column"), max_length=64, blank=True)
    value = models.TextField(_("value"), blank=True)
    reason = models.TextField(_("reason"))
    status = models.CharField(_("status"), max_length=20)

    class Meta:
        ordering = ["batch", "line", "pk"]
        verbose_name = _("import issue")
        verbose_name_plural = _("import issues")
        indexes = [models.Index(fields=["batch", "line"], name="importissue_line")]

    def __str__(self) -> str:
        return f"{self.batch_id}:{self.line}"


class ImportedMember(models.Model):
    """A member an import created or changed, with the values it replaced."""

    batch = models.ForeignKey(
        ImportBatch,
        verbose_name=_("import batch"),
        on_delete=models.CASCADE,
        related_name="imported_members",
    )
    member = models.ForeignKey(
        Member, verbose_name=_("member"), on_delete=models.CASCADE, related_name="+"
    )
    line = models.PositiveIntegerField(_("line"))
    created = models.BooleanField(_("created by the import"), default=False)
    previous = models.JSONField(
        _("previous values"),
        encoder=DjangoJSONEncoder,
        default=dict,
        blank=True,
        help_text=_("The fields the import changed, as they were before it."),
    )

    class Meta:
        verbose_name = _("imported member")
        verbose_name_plural = _("imported members")
        constraints = [
            models.UniqueConstraint(
                fields=["batch", "member"], name="importedmember_unique_batch_member"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.batch_id}:{self.member_id}"


class MemberMerge(models.Model):
    """Staff merged ``source`` into ``target``; ``moved`` lists what moved.

    ``moved`` maps each model label to the ids of the rows that moved from
    the source to the target, and keeps the source's tier fields, so the
    merge can be reverted exactly.
    """

    class Status(models.TextChoices):
        MERGED = "merged", _("Merged")
        REVERTED = "reverted", _("Reverted")

    source = models.ForeignKey(
        Member,
        verbose_name=_("merged member"),
        on_delete=models.PROTECT,
        related_name="merges_away",
    )
    target = models.ForeignKey(
        Member,
        verbose_name=_("kept member"),
        on_delete=models.PROTECT,
        related_name="merges_in",
    )
    status = models.CharField(
        _("status"), max_length=16, choices=Status, default=Status.MERGED
    )
    reason = models.TextField(_("reason"))
    moved = models.JSONField(
        _("moved rows"), encoder=DjangoJSONEncoder, default=dict, blank=True
    )
    merged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("merged by"),
        on_delete=models.PROTECT,
        related_name="+",
    )
    merged_at = models.DateTimeField(_("merged at"), default=timezone.now)
    reverted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("reverted by"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    reverted_at = models.DateTimeField(_("reverted at"), null=True, blank=True)

    class Meta:
        ordering = ["-merged_at", "-pk"]
        verbose_name = _("member merge")
        verbose_name_plural = _("member merges")
        constraints = [
            models.CheckConstraint(
                condition=~Q(source=models.F("target")),
                name="membermerge_source_not_target",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source_id} -> {self.target_id}"


class AuditAction(models.TextChoices):
    VIEW_PERSONAL = "view_personal", _("Viewed personal data")
    LOOKUP = "lookup", _("Looked up by phone or e-mail")
    CHANGE = "change", _("Changed personal data")
    EXPORT = "export", _("Exported data")
    EXPORT_MEMBER = "export_member", _("Exported one member's data")
    ERASE = "erase", _("Erased personal data")
    LIFT_TOMBSTONE = "lift_tombstone", _("Allowed an erased person back")
    OVERRIDE = "override", _("Overrode a tier")
    MERGE = "merge", _("Merged members")
    REVERT_MERGE = "revert_merge", _("Reverted a merge")
    IMPORT = "import", _("Imported data")
    ROLLBACK = "rollback", _("Rolled back an import")


class AuditEvent(models.Model):
    """One staff action on member data; rows are only ever added.

    ``detail`` contains ids, counts and formats, never the personal data itself.
    ``username`` keeps the actor's name after the user account is deleted.
    """

    at = models.DateTimeField(_("at"), default=timezone.now, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    username = models.CharField(_("username"), max_length=150, blank=True)
    action = models.CharField(_("action"), max_length=20, choices=AuditAction)
    member = models.ForeignKey(
        Member,
        verbose_name=_("member"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="audit_events",
        help_text=_("Empty for actions on many members; see the count."),
    )
    count = models.PositiveIntegerField(
        _("members"), default=1, help_text=_("How many members the action touched.")
    )
    detail = models.JSONField(
        _("detail"), encoder=DjangoJSONEncoder, default=dict, blank=True
    )

    class Meta:
        ordering = ["-at", "-pk"]
        verbose_name = _("audit event")
        verbose_name_plural = _("audit log")
        indexes = [
            models.Index(fields=["member", "at"], name="auditevent_member_at"),
            models.Index(fields=["user", "at"], name="auditevent_user_at"),
        ]

    def __str__(self) -> str:
        return f"{self.username or '-'} {self.action} #{self.member_id or '-'}"


class ErasureTombstone(models.Model):
    """A keyed hash of an erased person's channel id, phone or e-mail.

    Imports and channel events reject rows whose hash matches, so that an
    old file cannot bring the person back. The hash is an HMAC-SHA256 under
    ``settings.CRM_ERASURE_KEY`` and cannot be reversed without that key.
    """

    class Kind(models.TextChoices):
        CHANNEL_ID = "channel_id", _("Channel id")
        PHONE = "phone", _("Phone")
        EMAIL = "email", _("E-mail")

    digest = models.CharField(_("keyed hash"), max_length=64, unique=True)
    kind = models.CharField(_("kind"), max_length=16, choices=Kind)
    member = models.ForeignKey(
        Member,
        verbose_name=_("erased member"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="tombstones",
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("erasure tombstone")
        verbose_name_plural = _("erasure tombstones")

    def __str__(self) -> str:
        return f"{self.kind}:{self.digest[:12]}"
