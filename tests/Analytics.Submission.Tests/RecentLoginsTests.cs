using System.Net;
using Analytics.Events;
using Analytics.Limits;
using Analytics.Store;

namespace Analytics.Submission.Tests;

/// <summary>
/// The logins the fast path remembers at start-up: per account and network (IPv4 /24, IPv6 /64), the
/// first and the last successful AUTH within the window, as the sink recorded them; failed logins and
/// logins older than the window count nowhere.
/// </summary>
public sealed class RecentLoginsTests(StoreFixture fixture)
{
    [Fact]
    public async Task RecentLogins_PerAccountAndNetwork_FirstAndLastWithinTheWindow()
    {
        var user = "owner-" + Guid.NewGuid().ToString("N")[..8] + "@example.test";
        var now = DateTimeOffset.UtcNow;
        var id = 0UL;
        SmtpEvent Auth(DateTimeOffset at, string ip, bool ok) => new()
        {
            Timestamp = at, Node = "recent", Role = ListenerRole.Submission, SessionId = ++id, Kind = EventKind.Auth, ClientIp = IPAddress.Parse(ip),
            User = user, Mechanism = "PLAIN", Outcome = ok ? EventOutcome.Ok : EventOutcome.Reject, ReplyCode = (ushort)(ok ? 235 : 535),
        };

        await EventBatch.InsertAsync(fixture.Store, [
            Auth(now.AddDays(-20), "127.44.1.7", ok: true),
            Auth(now.AddDays(-2), "127.44.1.9", ok: true), // the same /24, another address
            Auth(now.AddHours(-3), "127.45.0.1", ok: true),
            Auth(now.AddHours(-1), "127.46.0.1", ok: false), // a failure: no network of the owner's
            Auth(now.AddDays(-40), "127.47.0.1", ok: true), // older than the window
            Auth(now.AddMinutes(-30), "2001:db8:5:6::1", ok: true),
            Auth(now.AddMinutes(-20), "2001:db8:5:6::2", ok: true),
        ]);

        var store = new UserStore(fixture.Store, new PasswordHasher(1000));
        var logins = (await store.RecentLoginsAsync(TimeSpan.FromDays(30), TestContext.Current.CancellationToken))
            .Where(l => l.User == user).OrderBy(l => l.First).ToList();

        Assert.Equal(3, logins.Count);
        var net = AddressKey.Of(IPAddress.Parse("127.44.1.0")).Network();
        Assert.Equal(net, logins[0].Network);
        Assert.Equal(now.AddDays(-20).UtcDateTime, logins[0].First, TimeSpan.FromMilliseconds(1));
        Assert.Equal(now.AddDays(-2).UtcDateTime, logins[0].Last, TimeSpan.FromMilliseconds(1));
        Assert.Equal(AddressKey.Of(IPAddress.Parse("127.45.0.9")).Network(), logins[1].Network);
        Assert.Equal(AddressKey.Of(IPAddress.Parse("2001:db8:5:6::ffff")).Network(), logins[2].Network);
        Assert.Equal(now.AddMinutes(-30).UtcDateTime, logins[2].First, TimeSpan.FromMilliseconds(1));
        Assert.Equal(now.AddMinutes(-20).UtcDateTime, logins[2].Last, TimeSpan.FromMilliseconds(1));
    }
}
