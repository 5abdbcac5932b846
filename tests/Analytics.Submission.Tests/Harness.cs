using System.Net;
using Analytics.Events;
using Analytics.Limits;
using Analytics.Store;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Submission.Tests;

/// <summary>
/// A real listener on free loopback ports (submission + MX), with its own data directory, a unique
/// node name (how its events are found in ClickHouse), a unique local domain and a user.
/// </summary>
public sealed class Harness : IAsyncDisposable
{
    public const string Password = "correct horse battery staple";

    private Harness(StoreFixture fixture, SubmissionOptions options, SubmissionListener listener, UserStore users, RecipientStore recipients, string tag,
        UserDirectory userDirectory, RecipientDirectory recipientDirectory)
    {
        UserDirectory = userDirectory;
        RecipientDirectory = recipientDirectory;
        Fixture = fixture;
        Options = options;
        Listener = listener;
        Users = users;
        Recipients = recipients;
        Tag = tag;
    }

    public StoreFixture Fixture { get; }

    public SubmissionOptions Options { get; }

    public SubmissionListener Listener { get; }

    /// <summary>The listener's limit book (dynamic limits can be put in it as the policy would).</summary>
    public LimitBook Book { get; private init; } = null!;

    public UserStore Users { get; }

    public RecipientStore Recipients { get; }

    public string Tag { get; }

    public string Node => "node-" + Tag;

    public string Domain => Tag + ".test";

    public string User => "user-" + Tag + "@" + Domain;

    public IPEndPoint Submission => Listener.Endpoints.First(e => e.Role == ListenerRole.Submission && !e.ImplicitTls).EndPoint;

    public IPEndPoint Mx => Listener.Endpoints.First(e => e.Role == ListenerRole.Mx).EndPoint;

    /// <summary>The delivery queue on the listener's spool, when the harness was started with one.</summary>
    public Delivery.DeliveryQueue? Queue { get; private set; }

    /// <param name="delivery">Delivery settings: a queue on the listener's spool is started with them (and stopped with the harness).</param>
    public static async Task<Harness> StartAsync(StoreFixture fixture, Action<SubmissionOptions>? configure = null, IEventPublisher? events = null,
        Action<LimitsOptions>? limits = null, Delivery.DeliveryOptions? delivery = null)
    {
        var tag = Guid.NewGuid().ToString("N")[..10];
        var options = new SubmissionOptions
        {
            NodeName = "node-" + tag,
            ServerName = "mx.test",
            DataDirectory = Path.Combine(fixture.Root, "listener-" + tag),
            SubmissionEndpoints = ["127.0.0.1:0"],
            MxEndpoints = ["127.0.0.1:0"],
            Directory = { Pbkdf2Iterations = 1000 },
        };
        configure?.Invoke(options);
        var limitOptions = new LimitsOptions
        {
            Session = { ShutdownDeadline = TimeSpan.FromSeconds(2) },
            FastPath = { TarpitDelay = TimeSpan.FromMilliseconds(50) },
        };
        limits?.Invoke(limitOptions);
        var hasher = new PasswordHasher(options.Directory.Pbkdf2Iterations);
        var users = new UserStore(fixture.Store, hasher);
        var recipients = new RecipientStore(fixture.Store);
        var userDirectory = new UserDirectory(users, hasher, NullLogger<UserDirectory>.Instance);
        var recipientDirectory = new RecipientDirectory(recipients, NullLogger<RecipientDirectory>.Instance);
        var book = new LimitBook(limitOptions, TimeProvider.System);
        var queue = delivery is null ? null : new Delivery.DeliveryQueue(delivery, options.SpoolDirectory, options.ServerName, options.NodeName,
            events ?? fixture.Sink, recipientDirectory.IsLocalDomain, NullLogger<Delivery.DeliveryQueue>.Instance);
        var harness = new Harness(fixture, options,
            new SubmissionListener(options, limitOptions, userDirectory, recipientDirectory,
                book,
                events ?? fixture.Sink,
                NullLogger<SubmissionListener>.Instance,
                queue: queue),
            users, recipients, tag, userDirectory, recipientDirectory) { Book = book, Queue = queue };
        if (queue is not null)
        {
            await queue.StartAsync(deliver: true, TestContext.Current.CancellationToken);
        }

        return await harness.InitAsync();
    }

    public UserDirectory UserDirectory { get; }

    public RecipientDirectory RecipientDirectory { get; }

    private async Task<Harness> InitAsync()
    {
        await Users.AddAsync(User, Password);
        await Recipients.ImportAsync(new StringReader($"""
            # test directory
            {User}
            alice@{Domain}
            bob@{Domain}   # trailing comment
            @{Domain}
            """));

        await UserDirectory.RefreshAsync(TestContext.Current.CancellationToken);
        await RecipientDirectory.RefreshAsync(TestContext.Current.CancellationToken);
        await Listener.StartAsync(TestContext.Current.CancellationToken);
        return this;
    }

    /// <summary>Waits until the listener's snapshots include what was just added.</summary>
    public static async Task EventuallyAsync(Func<bool> condition, int timeoutMs = 5000)
    {
        var until = Environment.TickCount64 + timeoutMs;
        while (!condition())
        {
            if (Environment.TickCount64 > until)
            {
                throw new TimeoutException("Condition not met in time.");
            }

            await Task.Delay(10);
        }
    }

    /// <summary>Events of this listener, from ClickHouse, after flushing the sink.</summary>
    public async Task<List<EventRow>> EventsAsync()
    {
        await Fixture.Sink.FlushAsync(TestContext.Current.CancellationToken);
        var result = await Fixture.Store.QueryAsync(
            """
            SELECT toString(kind) AS kind, toString(outcome) AS outcome, reply_code, status, user, mechanism, sender, recipient,
                   recipient_domain, size, detail, session_id, toString(role) AS role, client_ip
            FROM events WHERE node = {node:String} ORDER BY ts, kind
            """,
            QueryParameters.Of(("node", Node)), TestContext.Current.CancellationToken);
        return [.. Enumerable.Range(0, result.Rows.Count).Select(i => new EventRow(
            result.Get<string>(i, "kind"), result.Get<string>(i, "outcome"), (int)result.Get<ulong>(i, "reply_code"), result.Get<string>(i, "status"),
            result.Get<string>(i, "user"), result.Get<string>(i, "mechanism"), result.Get<string>(i, "sender"), result.Get<string>(i, "recipient"),
            result.Get<string>(i, "recipient_domain"), result.Get<ulong>(i, "size"), result.Get<string>(i, "detail"), result.Get<ulong>(i, "session_id"),
            result.Get<string>(i, "role"), result.Get<string>(i, "client_ip")))];
    }

    /// <summary>Waits for events to satisfy <paramref name="condition"/> (a close event lands after the client has gone).</summary>
    public async Task<List<EventRow>> EventsWhenAsync(Func<List<EventRow>, bool> condition)
    {
        var until = Environment.TickCount64 + 5000;
        while (true)
        {
            var events = await EventsAsync();
            if (condition(events) || Environment.TickCount64 > until)
            {
                return events;
            }

            await Task.Delay(25);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Listener.DisposeAsync();
        if (Queue is not null)
        {
            await Queue.DisposeAsync();
        }
    }
}

public sealed record EventRow(
    string Kind, string Outcome, int ReplyCode, string Status, string User, string Mechanism, string Sender, string Recipient,
    string RecipientDomain, ulong Size, string Detail, ulong SessionId, string Role, string ClientIp);
