using System.Net;

namespace Analytics.Events.Tests;

/// <summary>Runs of test events: the i-th a millisecond after 2026-11-28 12:00 UTC, its own session, from 127.0.<c>net</c>.x.</summary>
internal static class NumberedEvents
{
    public static SmtpEvent Of(int i, string node, int net, EventKind kind = EventKind.Rcpt, ListenerRole role = ListenerRole.Mx) => new()
    {
        Timestamp = new DateTimeOffset(2026, 11, 28, 12, 0, 0, TimeSpan.Zero).AddMilliseconds(i),
        Node = node,
        Role = role,
        SessionId = (ulong)i,
        Kind = kind,
        ClientIp = IPAddress.Parse($"127.0.{net}.{i % 250 + 1}"),
        Recipient = "r" + i + "@example.org",
        RecipientDomain = "example.org",
    };
}
