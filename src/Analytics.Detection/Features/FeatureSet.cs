using System.Globalization;
using Analytics.Store;

namespace Analytics.Detection.Features;

/// <summary>The model's inputs: one named number each, and how an analyst reads it.</summary>
public sealed record FeatureDefinition(string Name, string Describe);

/// <summary>An entity as the detector sees it: who, when, and its feature vector.</summary>
public sealed record EntityFeatures(EntityRef Entity, DateTime AsOf, float[] Values)
{
    /// <summary>The entity's own normal (per day over its 7-day baseline), for explanations; not model input.</summary>
    public double BaselineMessagesPerDay { get; init; }

    public double BaselineRecipientsPerDay { get; init; }

    public double BaselineAuthFailuresPerDay { get; init; }

    public float this[string name] => Values[FeatureSet.Index(name)];
}

/// <summary>
/// The feature vector, computed from <c>features/entity_features.sql</c> (raw window counts) plus
/// ratios and comparisons with the entity's own 7-day baseline derived here. Order is fixed: it is
/// the model's input layout (the model card records it, and a model with another layout is refused).
/// </summary>
public static class FeatureSet
{
    public static IReadOnlyList<FeatureDefinition> All { get; } =
    [
        new("is_user", "entity is an account"),
        new("is_ip", "entity is a client IP"),
        new("is_net", "entity is a network"),
        new("auth_attempts_5m", "{0:0} AUTH attempts in 5 min"),
        new("auth_failures_5m", "{0:0} AUTH failures in 5 min"),
        new("auth_failures_10m", "{0:0} AUTH failures in 10 min"),
        new("auth_failures_1h", "{0:0} AUTH failures in 1 h"),
        new("auth_fail_ratio_1h", "{0:P0} of AUTH attempts failed in 1 h"),
        new("auth_failures_24h", "{0:0} AUTH failures in 24 h"),
        new("users_tried_1h", "{0:0} distinct accounts tried in 1 h"),
        new("users_tried_24h", "{0:0} distinct accounts tried in 24 h"),
        new("ips_1h", "{0:0} distinct client IPs in 1 h"),
        new("nets_1h", "{0:0} distinct networks in 1 h"),
        new("ips_24h", "{0:0} distinct client IPs in 24 h"),
        new("rcpt_5m", "{0:0} recipients tried in 5 min"),
        new("rcpt_1h", "{0:0} recipients tried in 1 h"),
        new("rcpt_unknown_10m", "{0:0} unknown-mailbox rejections in 10 min"),
        new("rcpt_unknown_1h", "{0:0} unknown-mailbox rejections in 1 h"),
        new("rcpt_unknown_ratio_1h", "{0:P0} of recipients were unknown mailboxes in 1 h"),
        new("rcpt_rejected_ratio_1h", "{0:P0} of recipients rejected in 1 h"),
        new("rcpt_unknown_24h", "{0:0} unknown-mailbox rejections in 24 h"),
        new("recipients_1h", "{0:0} distinct recipients in 1 h"),
        new("recipient_domains_1h", "{0:0} distinct recipient domains in 1 h"),
        new("recipients_24h", "{0:0} distinct recipients in 24 h"),
        new("messages_5m", "{0:0} messages in 5 min"),
        new("messages_1h", "{0:0} messages in 1 h"),
        new("messages_24h", "{0:0} messages in 24 h"),
        new("rcpt_per_minute_5m", "{0:0.#} recipients a minute over 5 min"),
        new("max_message_rcpts_1h", "{0:0} recipients in one message (max, 1 h)"),
        new("sessions_1h", "{0:0} sessions in 1 h"),
        new("sessions_without_data_ratio_1h", "{0:P0} of sessions sent no message in 1 h"),
        new("active_minutes_1h", "active in {0:0} of the last 60 minutes"),
        new("burstiness_1h", "per-minute activity varies {0:0.##}x its mean (1 h)"),
        new("invalid_commands_1h", "{0:0} invalid commands in 1 h"),
        new("new_ip_share_1h", "{0:P0} of its IPs are new for the account"),
        new("new_nets_1h", "{0:0} networks never used before by the account"),
        new("new_recipient_share_1h", "{0:P0} of recipients never mailed before"),
        new("new_domains_1h", "{0:0} recipient domains never mailed before"),
        new("new_ip_share_24h", "{0:P0} of its IPs in 24 h were first used by the account within the day"),
        new("new_nets_24h", "{0:0} networks first used by the account within the last 24 h"),
        new("new_clients_24h", "{0:0} clients (EHLO name, TLS, AUTH mechanism) first used by the account within the last 24 h"),
        new("passwords_1h", "{0:0} distinct passwords tried in 1 h"),
        new("failed_passwords_1h", "{0:0} distinct wrong passwords in 1 h"),
        new("accounts_per_password_1h", "{0:0.#} accounts tried per distinct password in 1 h"),
        new("auth_ok_after_fail_1h", "{0:0} logins that succeeded after a failure in the same session (1 h)"),
        new("sent_after_fail_1h", "{0:0} messages sent in sessions whose login succeeded after a failure (1 h)"),
        new("helo_literal_share_1h", "{0:P0} of sessions ended in 1 h greeted with an address literal"),
        new("helo_bare_share_1h", "{0:P0} of sessions ended in 1 h greeted with a dotless name"),
        new("tls_share_1h", "{0:P0} of sessions ended in 1 h used STARTTLS"),
        new("auth_login_share_1h", "{0:P0} of AUTH attempts used LOGIN (1 h)"),
        new("quit_share_1h", "{0:P0} of sessions ended with QUIT (1 h)"),
        new("null_senders_1h", "{0:0} MAIL FROM:<> in 1 h"),
        new("rsets_1h", "{0:0} RSETs in 1 h"),
        new("session_seconds_1h", "sessions last {0:0.#} s on average (1 h)"),
        new("commands_per_session_1h", "{0:0.#} commands per session (1 h)"),
        new("interval_cv_1h", "gaps between its active minutes vary {0:0.##}x their mean (1 h; low is machine-regular)"),
        new("delivery_failures_24h", "{0:0} of its messages' deliveries failed permanently in 24 h"),
        new("delivery_failure_ratio_24h", "{0:P0} of its messages' deliveries failed in 24 h"),
        new("delivery_failures_vs_baseline", "{0:0.#}x its usual failed deliveries a day"),
        new("baseline_delivery_failure_ratio", "{0:P0} of its deliveries failed in its 7-day baseline"),
        new("messages_vs_baseline", "{0:0.#}x its usual hourly messages"),
        new("messages_24h_vs_baseline", "{0:0.#}x its usual messages a day (24 h)"),
        new("rcpt_vs_baseline", "{0:0.#}x its usual hourly recipients"),
        new("hour_of_day_share", "{0:P0} of its usual activity falls in this hour of day"),
        new("has_baseline", "has at least a day of history"),
        new("age_hours", "first seen {0:0.#} h ago (within 7 days)"),
    ];

    private static readonly Dictionary<string, int> Indexes = All.Select((f, i) => (f.Name, i)).ToDictionary(x => x.Name, x => x.i);

    public static int Count => All.Count;

    public static int Index(string name) => Indexes.TryGetValue(name, out var i) ? i : throw new KeyNotFoundException($"No feature '{name}'.");

    /// <summary>A hash of the layout, recorded with a model so that a mismatched model is refused.</summary>
    public static string LayoutHash { get; } = Convert.ToHexStringLower(
        System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(string.Join(",", All.Select(f => f.Name)))))[..16];

    public static string Describe(int index, float value) =>
        string.Format(CultureInfo.InvariantCulture, All[index].Describe, value);

    /// <summary>Builds vectors from the rows of entity_features.sql (as of <paramref name="asOf"/>) or of the batch query (as of each row's <c>t</c>).</summary>
    public static List<EntityFeatures> FromRows(QueryResult result, DateTime? asOf)
    {
        var o = result.Columns.Select(c => c.Name).Select((n, i) => (n, i)).ToDictionary(x => x.n, x => x.i);
        var columns = Raw.Names.Select(n => o.TryGetValue(n, out var i) ? i : throw new InvalidOperationException($"The feature query has no column '{n}'.")).ToArray();
        var list = new List<EntityFeatures>(result.Rows.Count);
        var r = new double[Raw.Count];
        foreach (var row in result.Rows)
        {
            for (var c = 0; c < columns.Length; c++)
            {
                r[c] = row[columns[c]] switch
                {
                    null => 0,
                    ulong u => u,
                    long l => l,
                    double d => d,
                    var other => Convert.ToDouble(other, CultureInfo.InvariantCulture),
                };
            }

            var kind = EntityKinds.Parse((string)row[o["entity_kind"]]!);
            var at = asOf ?? DateTime.SpecifyKind((DateTime)row[o["t"]]!, DateTimeKind.Utc);
            list.Add(Build(kind, (string)row[o["entity"]]!, at, r));
        }

        return list;
    }

    /// <summary>
    /// The vector of one entity from the query's raw figures, laid out as <see cref="Raw.Names"/>
    /// (non-finite figures read as 0). Every reader (typed rows, RowBinary) comes through here, so the
    /// derived features are the same whichever way the figures were read.
    /// </summary>
    public static EntityFeatures Build(EntityKind kind, string entity, DateTime at, ReadOnlySpan<double> raw)
    {
        Span<double> r = stackalloc double[Raw.Count];
        for (var c = 0; c < r.Length; c++)
        {
            r[c] = double.IsFinite(raw[c]) ? raw[c] : 0;
        }

        // The features are set in their layout order: a position, not a lookup by name per value (a
        // million entities a pass); a name out of order fails at once, in every test.
        var v = new float[Count];
        var k = 0;
        void Set(string name, double value)
        {
            if (!ReferenceEquals(All[k].Name, name) && All[k].Name != name)
            {
                throw new InvalidOperationException($"Feature '{name}' is set out of the layout's order (expected '{All[k].Name}').");
            }

            v[k++] = (float)value;
        }
        Set("is_user", kind == EntityKind.User ? 1 : 0);
        Set("is_ip", kind == EntityKind.Ip ? 1 : 0);
        Set("is_net", kind == EntityKind.Net ? 1 : 0);
        Set("auth_attempts_5m", r[Raw.AuthAttempts5m]);
        Set("auth_failures_5m", r[Raw.AuthFailures5m]);
        Set("auth_failures_10m", r[Raw.AuthFailures10m]);
        Set("auth_failures_1h", r[Raw.AuthFailures1h]);
        Set("auth_fail_ratio_1h", Ratio(r[Raw.AuthFailures1h], r[Raw.AuthAttempts1h]));
        Set("auth_failures_24h", r[Raw.AuthFailures24h]);
        Set("users_tried_1h", r[Raw.UsersTried1h]);
        Set("users_tried_24h", r[Raw.UsersTried24h]);
        Set("ips_1h", r[Raw.Ips1h]);
        Set("nets_1h", r[Raw.Nets1h]);
        Set("ips_24h", r[Raw.Ips24h]);
        Set("rcpt_5m", r[Raw.Rcpt5m]);
        Set("rcpt_1h", r[Raw.Rcpt1h]);
        Set("rcpt_unknown_10m", r[Raw.RcptUnknown10m]);
        Set("rcpt_unknown_1h", r[Raw.RcptUnknown1h]);
        Set("rcpt_unknown_ratio_1h", Ratio(r[Raw.RcptUnknown1h], r[Raw.Rcpt1h]));
        Set("rcpt_rejected_ratio_1h", Ratio(r[Raw.RcptRejected1h], r[Raw.Rcpt1h]));
        Set("rcpt_unknown_24h", r[Raw.RcptUnknown24h]);
        Set("recipients_1h", r[Raw.Recipients1h]);
        Set("recipient_domains_1h", r[Raw.RecipientDomains1h]);
        Set("recipients_24h", r[Raw.Recipients24h]);
        Set("messages_5m", r[Raw.Messages5m]);
        Set("messages_1h", r[Raw.Messages1h]);
        Set("messages_24h", r[Raw.Messages24h]);
        Set("rcpt_per_minute_5m", r[Raw.Rcpt5m] / 5.0);
        Set("max_message_rcpts_1h", r[Raw.MaxMessageRcpts1h]);
        Set("sessions_1h", r[Raw.Sessions1h]);
        Set("sessions_without_data_ratio_1h", r[Raw.Sessions1h] > 0 ? 1 - Math.Min(1, r[Raw.DataSessions1h] / r[Raw.Sessions1h]) : 0);
        Set("active_minutes_1h", r[Raw.ActiveMinutes1h]);
        Set("burstiness_1h", r[Raw.Burstiness1h]);
        Set("invalid_commands_1h", r[Raw.InvalidCommands1h]);
        Set("new_ip_share_1h", r[Raw.Ips1h] > 0 ? Math.Min(1, r[Raw.NewIps1h] / r[Raw.Ips1h]) : 0);
        Set("new_nets_1h", r[Raw.NewNets1h]);
        Set("new_recipient_share_1h", r[Raw.Recipients1h] > 0 ? Math.Min(1, r[Raw.NewRecipients1h] / r[Raw.Recipients1h]) : 0);
        Set("new_domains_1h", r[Raw.NewDomains1h]);

        // What lasts of a takeover beyond the hour its address is new in: a quiet bot on a proxy keeps
        // logging in from addresses and networks the account first used today, day after day.
        Set("new_ip_share_24h", r[Raw.Ips24h] > 0 ? Math.Min(1, r[Raw.NewIps24h] / r[Raw.Ips24h]) : 0);
        Set("new_nets_24h", r[Raw.NewNets24h]);
        Set("new_clients_24h", r[Raw.NewClients24h]);

        Set("passwords_1h", r[Raw.Passwords1h]);
        Set("failed_passwords_1h", r[Raw.FailedPasswords1h]);
        Set("accounts_per_password_1h", r[Raw.Passwords1h] > 0 ? r[Raw.UsersTried1h] / r[Raw.Passwords1h] : 0);
        Set("auth_ok_after_fail_1h", r[Raw.AuthOkAfterFail1h]);
        Set("sent_after_fail_1h", r[Raw.SentAfterFail1h]);
        Set("helo_literal_share_1h", Ratio(r[Raw.HeloLiteral1h], r[Raw.Closes1h]));
        Set("helo_bare_share_1h", Ratio(r[Raw.HeloBare1h], r[Raw.Closes1h]));
        Set("tls_share_1h", Ratio(r[Raw.Tls1h], r[Raw.Closes1h]));
        Set("auth_login_share_1h", Ratio(r[Raw.AuthLogin1h], r[Raw.AuthAttempts1h]));

        // No session ended yet in the window: nothing was dropped (1), not "every session dropped".
        Set("quit_share_1h", r[Raw.Closes1h] > 0 ? r[Raw.Quits1h] / r[Raw.Closes1h] : 1);
        Set("null_senders_1h", r[Raw.NullSenders1h]);
        Set("rsets_1h", r[Raw.Rsets1h]);
        Set("session_seconds_1h", Ratio(r[Raw.SessionMs1h], r[Raw.Closes1h]) / 1000.0);
        Set("commands_per_session_1h", Ratio(r[Raw.SessionCommands1h], r[Raw.Closes1h]));
        Set("interval_cv_1h", r[Raw.IntervalCv1h]);
        Set("delivery_failures_24h", r[Raw.DeliveryFailures24h]);
        Set("delivery_failure_ratio_24h", Ratio(r[Raw.DeliveryFailures24h], r[Raw.Deliveries24h]));

        // Baseline: the 7 days before the last hour, per hour of that span the entity existed.
        var baselineHours = Math.Max(1, (Math.Min(r[Raw.AgeMinutes], 7 * 24 * 60) - 60) / 60.0);
        var hasBaseline = r[Raw.AgeMinutes] >= 24 * 60 && r[Raw.BaselineActiveMinutes] > 0;
        var baselineDays = baselineHours / 24.0;

        // Bounces weighed against the entity's own normal: a person with a stale address book bounces
        // every day from the same address, a taken-over account starts bouncing when the bot does.
        Set("delivery_failures_vs_baseline", r[Raw.DeliveryFailures24h] / ((hasBaseline ? r[Raw.BaselineDeliveryFailures] / baselineDays : 0) + 1));
        Set("baseline_delivery_failure_ratio", hasBaseline ? Ratio(r[Raw.BaselineDeliveryFailures], r[Raw.BaselineDeliveries]) : 0);
        Set("messages_vs_baseline", r[Raw.Messages1h] / (r[Raw.BaselineMessages] / baselineHours + 1));
        Set("messages_24h_vs_baseline", r[Raw.Messages24h] / ((hasBaseline ? r[Raw.BaselineMessages] / baselineDays : 0) + 1));
        Set("rcpt_vs_baseline", r[Raw.Rcpt1h] / (r[Raw.BaselineRcpt] / baselineHours + 1));
        Set("hour_of_day_share", hasBaseline ? Ratio(r[Raw.BaselineMinutesThisHour], r[Raw.BaselineActiveMinutes]) : 0);
        Set("has_baseline", hasBaseline ? 1 : 0);
        Set("age_hours", r[Raw.AgeMinutes] / 60.0);
        return new EntityFeatures(new EntityRef(kind, entity), at, v)
        {
            BaselineMessagesPerDay = hasBaseline ? r[Raw.BaselineMessages] / baselineDays : double.NaN,
            BaselineRecipientsPerDay = hasBaseline ? r[Raw.BaselineRcpt] / baselineDays : double.NaN,
            BaselineAuthFailuresPerDay = hasBaseline ? r[Raw.BaselineAuthFailures] / baselineDays : double.NaN,
        };
    }

    /// <summary>The raw figures the feature query returns per entity (beside entity_kind and entity), by column name.</summary>
    public static class Raw
    {
        public const int AuthAttempts5m = 0;
        public const int AuthFailures5m = 1;
        public const int AuthFailures10m = 2;
        public const int AuthFailures1h = 3;
        public const int AuthAttempts1h = 4;
        public const int AuthFailures24h = 5;
        public const int UsersTried1h = 6;
        public const int UsersTried24h = 7;
        public const int Ips1h = 8;
        public const int Nets1h = 9;
        public const int Ips24h = 10;
        public const int Rcpt5m = 11;
        public const int Rcpt1h = 12;
        public const int RcptUnknown10m = 13;
        public const int RcptUnknown1h = 14;
        public const int RcptRejected1h = 15;
        public const int RcptUnknown24h = 16;
        public const int Recipients1h = 17;
        public const int RecipientDomains1h = 18;
        public const int Recipients24h = 19;
        public const int Messages5m = 20;
        public const int Messages1h = 21;
        public const int Messages24h = 22;
        public const int MaxMessageRcpts1h = 23;
        public const int Sessions1h = 24;
        public const int DataSessions1h = 25;
        public const int ActiveMinutes1h = 26;
        public const int Burstiness1h = 27;
        public const int InvalidCommands1h = 28;
        public const int NewIps1h = 29;
        public const int NewNets1h = 30;
        public const int NewRecipients1h = 31;
        public const int NewDomains1h = 32;
        public const int Passwords1h = 33;
        public const int FailedPasswords1h = 34;
        public const int AuthOkAfterFail1h = 35;
        public const int SentAfterFail1h = 36;
        public const int HeloLiteral1h = 37;
        public const int Closes1h = 38;
        public const int HeloBare1h = 39;
        public const int Tls1h = 40;
        public const int AuthLogin1h = 41;
        public const int Quits1h = 42;
        public const int NullSenders1h = 43;
        public const int Rsets1h = 44;
        public const int SessionMs1h = 45;
        public const int SessionCommands1h = 46;
        public const int IntervalCv1h = 47;
        public const int DeliveryFailures24h = 48;
        public const int Deliveries24h = 49;
        public const int AgeMinutes = 50;
        public const int BaselineActiveMinutes = 51;
        public const int BaselineMessages = 52;
        public const int BaselineRcpt = 53;
        public const int BaselineMinutesThisHour = 54;
        public const int BaselineAuthFailures = 55;
        public const int BaselineDeliveries = 56;
        public const int BaselineDeliveryFailures = 57;
        public const int NewIps24h = 58;
        public const int NewNets24h = 59;
        public const int NewClients24h = 60;

        public static IReadOnlyList<string> Names { get; } =
        [
            "auth_attempts_5m",
            "auth_failures_5m",
            "auth_failures_10m",
            "auth_failures_1h",
            "auth_attempts_1h",
            "auth_failures_24h",
            "users_tried_1h",
            "users_tried_24h",
            "ips_1h",
            "nets_1h",
            "ips_24h",
            "rcpt_5m",
            "rcpt_1h",
            "rcpt_unknown_10m",
            "rcpt_unknown_1h",
            "rcpt_rejected_1h",
            "rcpt_unknown_24h",
            "recipients_1h",
            "recipient_domains_1h",
            "recipients_24h",
            "messages_5m",
            "messages_1h",
            "messages_24h",
            "max_message_rcpts_1h",
            "sessions_1h",
            "data_sessions_1h",
            "active_minutes_1h",
            "burstiness_1h",
            "invalid_commands_1h",
            "new_ips_1h",
            "new_nets_1h",
            "new_recipients_1h",
            "new_domains_1h",
            "passwords_1h",
            "failed_passwords_1h",
            "auth_ok_after_fail_1h",
            "sent_after_fail_1h",
            "helo_literal_1h",
            "closes_1h",
            "helo_bare_1h",
            "tls_1h",
            "auth_login_1h",
            "quits_1h",
            "null_senders_1h",
            "rsets_1h",
            "session_ms_1h",
            "session_commands_1h",
            "interval_cv_1h",
            "delivery_failures_24h",
            "deliveries_24h",
            "age_minutes",
            "baseline_active_minutes",
            "baseline_messages",
            "baseline_rcpt",
            "baseline_minutes_this_hour",
            "baseline_auth_failures",
            "baseline_deliveries",
            "baseline_delivery_failures",
            "new_ips_24h",
            "new_nets_24h",
            "new_clients_24h",
        ];

        public static int Count => Names.Count;
    }

    private static double Ratio(double part, double whole) => whole > 0 ? part / whole : 0;
}
