using System.Net;
using Analytics.Events;

namespace Analytics.Simulation;

public enum StepKind : byte
{
    Ehlo,
    StartTls,
    Auth,
    Mail,
    Rcpt,

    /// <summary>DATA when at least one recipient was accepted, else RSET (what a real client does).</summary>
    Data,
    Rset,
    Quit,
}

/// <summary>
/// One client command, sent <see cref="Delay"/> after the previous reply. <see cref="Text"/> is the
/// HELO name, AUTH user, sender or recipient; <see cref="Secret"/> the AUTH password (or mechanism
/// in <see cref="Mechanism"/>); <see cref="Size"/> the message size (DATA) or declared SIZE (MAIL).
/// </summary>
public readonly record struct Step(StepKind Kind, TimeSpan Delay, string Text = "", string Secret = "", string Mechanism = "", int Size = 0);

/// <summary>
/// One SMTP session a simulated host will run: who, where from, when, and what it sends. A script
/// without a final <see cref="StepKind.Quit"/> drops the connection.
/// </summary>
public sealed record SessionScript
{
    public required ulong SessionId { get; init; }

    public required IPAddress ClientIp { get; init; }

    public required ushort ClientPort { get; init; }

    public required ListenerRole Role { get; init; }

    public required DateTimeOffset Start { get; init; }

    public required IReadOnlyList<Step> Steps { get; init; }

    /// <summary>The class of the entity that runs it (for reports; the labels table is the ground truth).</summary>
    public required string Class { get; init; }

    /// <summary>The population or attack variant of the entity (for reports of who the fast path refused).</summary>
    public string Population { get; init; } = "";

    /// <summary>A standard client would run it as is (live mode uses MailKit then, raw sockets otherwise).</summary>
    public bool WellBehaved { get; init; }
}
