using System.Net;
using Analytics.Testing;

namespace Analytics.Simulation.Attacks;

/// <summary>
/// Postfix 3.7 as a plain inbound MX, for comparison (<c>bench mx</c>): an instance of its own in a
/// folder (<see cref="PostfixRig"/>, shared with the tests), one smtpd on a loopback port, its local domain's
/// mailboxes in a recipient table (<c>virtual_mailbox_maps</c>, so an unknown address gets Postfix's own
/// <c>550 5.1.1</c> from <c>reject_unlisted_recipient</c>), and every accepted message discarded after it
/// was queued (<c>virtual_transport = discard</c>). The client is not in <c>mynetworks</c>: it is treated as
/// the Internet is. Needs the Debian package and root (<see cref="MissingReason"/>).
/// </summary>
public sealed class PostfixMx : IAsyncDisposable
{
    private readonly PostfixRig _rig;

    private PostfixMx(PostfixRig rig) => _rig = rig;

    /// <summary>Null when it can run here; otherwise why not.</summary>
    public static string? MissingReason => PostfixRig.MissingReason;

    public IPEndPoint EndPoint => _rig.EndPoint;

    /// <summary>The main.cf settings that differ from the rig's (and so from a stock install), for a report.</summary>
    public static IReadOnlyList<string> MxSettings { get; } =
    [
        "mynetworks=127.255.255.254/32", // the bench client (127.0.0.1) is a stranger, as on a real MX
        "smtpd_relay_restrictions=permit_mynetworks, reject_unauth_destination",
        "smtpd_recipient_restrictions=", // Postfix's default: reject_unlisted_recipient alone decides
        "virtual_transport=discard:",
    ];

    /// <summary>Starts it in <paramref name="root"/> with <paramref name="mailboxes"/> of <paramref name="domain"/> as the recipient table.</summary>
    public static async Task<PostfixMx> StartAsync(string root, string domain, IReadOnlyList<string> mailboxes)
    {
        var rig = await PostfixRig.CreateAsync(root, new PostfixRigOptions
        {
            Domains = [domain],
            Mailboxes = mailboxes,
            MainCf = MxSettings,
        });
        return new PostfixMx(rig);
    }

    /// <summary>Postfix's log so far (for a failed run's diagnosis).</summary>
    public string MailLogText => _rig.MailLogText;

    public ValueTask DisposeAsync() => _rig.DisposeAsync();
}
