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
        new("messages_vs_baseline", "{0:0.#}x its usual hourly messages"),
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
        var list = new List<EntityFeatures>(result.Rows.Count);
        foreach (var row in result.Rows)
        {
            double F(string column) => row[o[column]] switch
            {
                null => 0,
                ulong u => u,
                long l => l,
                double d => double.IsFinite(d) ? d : 0,
                var other => Convert.ToDouble(other, CultureInfo.InvariantCulture),
            };

            var kind = EntityKinds.Parse((string)row[o["entity_kind"]]!);
            var at = asOf ?? DateTime.SpecifyKind((DateTime)row[o["t"]]!, DateTimeKind.Utc);
            var v = new float[Count];
            void Set(string name, double value) => v[Indexes[name]] = (float)value;
            Set("is_user", kind == EntityKind.User ? 1 : 0);
            Set("is_ip", kind == EntityKind.Ip ? 1 : 0);
            Set("is_net", kind == EntityKind.Net ? 1 : 0);
            Set("auth_attempts_5m", F("auth_attempts_5m"));
            Set("auth_failures_5m", F("auth_failures_5m"));
            Set("auth_failures_10m", F("auth_failures_10m"));
            Set("auth_failures_1h", F("auth_failures_1h"));
            Set("auth_fail_ratio_1h", Ratio(F("auth_failures_1h"), F("auth_attempts_1h")));
            Set("auth_failures_24h", F("auth_failures_24h"));
            Set("users_tried_1h", F("users_tried_1h"));
            Set("users_tried_24h", F("users_tried_24h"));
            Set("ips_1h", F("ips_1h"));
            Set("nets_1h", F("nets_1h"));
            Set("ips_24h", F("ips_24h"));
            Set("rcpt_5m", F("rcpt_5m"));
            Set("rcpt_1h", F("rcpt_1h"));
            Set("rcpt_unknown_10m", F("rcpt_unknown_10m"));
            Set("rcpt_unknown_1h", F("rcpt_unknown_1h"));
            Set("rcpt_unknown_ratio_1h", Ratio(F("rcpt_unknown_1h"), F("rcpt_1h")));
            Set("rcpt_rejected_ratio_1h", Ratio(F("rcpt_rejected_1h"), F("rcpt_1h")));
            Set("rcpt_unknown_24h", F("rcpt_unknown_24h"));
            Set("recipients_1h", F("recipients_1h"));
            Set("recipient_domains_1h", F("recipient_domains_1h"));
            Set("recipients_24h", F("recipients_24h"));
            Set("messages_5m", F("messages_5m"));
            Set("messages_1h", F("messages_1h"));
            Set("messages_24h", F("messages_24h"));
            Set("rcpt_per_minute_5m", F("rcpt_5m") / 5.0);
            Set("max_message_rcpts_1h", F("max_message_rcpts_1h"));
            Set("sessions_1h", F("sessions_1h"));
            Set("sessions_without_data_ratio_1h", F("sessions_1h") > 0 ? 1 - Math.Min(1, F("data_sessions_1h") / F("sessions_1h")) : 0);
            Set("active_minutes_1h", F("active_minutes_1h"));
            Set("burstiness_1h", F("burstiness_1h"));
            Set("invalid_commands_1h", F("invalid_commands_1h"));
            Set("new_ip_share_1h", F("ips_1h") > 0 ? Math.Min(1, F("new_ips_1h") / F("ips_1h")) : 0);
            Set("new_nets_1h", F("new_nets_1h"));
            Set("new_recipient_share_1h", F("recipients_1h") > 0 ? Math.Min(1, F("new_recipients_1h") / F("recipients_1h")) : 0);
            Set("new_domains_1h", F("new_domains_1h"));

            Set("passwords_1h", F("passwords_1h"));
            Set("failed_passwords_1h", F("failed_passwords_1h"));
            Set("accounts_per_password_1h", F("passwords_1h") > 0 ? F("users_tried_1h") / F("passwords_1h") : 0);
            Set("auth_ok_after_fail_1h", F("auth_ok_after_fail_1h"));
            Set("sent_after_fail_1h", F("sent_after_fail_1h"));
            Set("helo_literal_share_1h", Ratio(F("helo_literal_1h"), F("closes_1h")));
            Set("helo_bare_share_1h", Ratio(F("helo_bare_1h"), F("closes_1h")));
            Set("tls_share_1h", Ratio(F("tls_1h"), F("closes_1h")));
            Set("auth_login_share_1h", Ratio(F("auth_login_1h"), F("auth_attempts_1h")));

            // No session ended yet in the window: nothing was dropped (1), not "every session dropped".
            Set("quit_share_1h", F("closes_1h") > 0 ? F("quits_1h") / F("closes_1h") : 1);
            Set("null_senders_1h", F("null_senders_1h"));
            Set("rsets_1h", F("rsets_1h"));
            Set("session_seconds_1h", Ratio(F("session_ms_1h"), F("closes_1h")) / 1000.0);
            Set("commands_per_session_1h", Ratio(F("session_commands_1h"), F("closes_1h")));
            Set("interval_cv_1h", F("interval_cv_1h"));
            Set("delivery_failures_24h", F("delivery_failures_24h"));
            Set("delivery_failure_ratio_24h", Ratio(F("delivery_failures_24h"), F("deliveries_24h")));

            // Baseline: the 7 days before the last hour, per hour of that span the entity existed.
            var baselineHours = Math.Max(1, (Math.Min(F("age_minutes"), 7 * 24 * 60) - 60) / 60.0);
            var hasBaseline = F("age_minutes") >= 24 * 60 && F("baseline_active_minutes") > 0;
            Set("messages_vs_baseline", F("messages_1h") / (F("baseline_messages") / baselineHours + 1));
            Set("rcpt_vs_baseline", F("rcpt_1h") / (F("baseline_rcpt") / baselineHours + 1));
            Set("hour_of_day_share", hasBaseline ? Ratio(F("baseline_minutes_this_hour"), F("baseline_active_minutes")) : 0);
            Set("has_baseline", hasBaseline ? 1 : 0);
            Set("age_hours", F("age_minutes") / 60.0);
            var baselineDays = baselineHours / 24.0;
            list.Add(new EntityFeatures(new EntityRef(kind, (string)row[o["entity"]]!), at, v)
            {
                BaselineMessagesPerDay = hasBaseline ? F("baseline_messages") / baselineDays : double.NaN,
                BaselineRecipientsPerDay = hasBaseline ? F("baseline_rcpt") / baselineDays : double.NaN,
                BaselineAuthFailuresPerDay = hasBaseline ? F("baseline_auth_failures") / baselineDays : double.NaN,
            });
        }

        return list;
    }

    private static double Ratio(double part, double whole) => whole > 0 ? part / whole : 0;
}
