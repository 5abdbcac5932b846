using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Analytics.Limits;
using Microsoft.Extensions.Logging.Abstractions;

namespace Analytics.Policy.Tests;

/// <summary>
/// Postfix 3.7 (an MX and a submission service with Dovecot SASL) and Dovecot 2.3 of the test's own, on
/// free loopback ports in a temporary folder, with the engine in this process beside them: Postfix asks
/// it through <c>check_policy_service</c> on a Unix socket (the documented recommended placement),
/// Dovecot through <c>auth_policy_server_url</c>, and it follows Postfix's <c>maillog_file</c>.
/// </summary>
internal sealed class MailStack : IAsyncDisposable
{
    public const string Domain = "example.test";
    public const string Nonce = "policy-test-nonce";

    private readonly TempDirectory _temp = new();

    private MailStack()
    {
    }

    public EventLog Events { get; } = new();

    public LimitBook Book { get; private set; } = null!;

    public PolicyHostedService Engine { get; private set; } = null!;

    public PostfixRig Postfix { get; private set; } = null!;

    public DovecotRig Dovecot { get; private set; } = null!;

    public IReadOnlyDictionary<string, string> Accounts { get; private set; } = null!;

    public static string? MissingReason => PostfixRig.MissingReason ?? DovecotRig.MissingReason;

    /// <summary>Where a mailbox user's mail lands.</summary>
    public static IReadOnlyList<string> Mailboxes { get; } = ["alice@example.test", "bob@example.test", "carol@example.test", "dave@example.test"];

    public static async Task<MailStack> StartAsync(IReadOnlyDictionary<string, string> accounts, LimitsOptions? limits = null)
    {
        var stack = new MailStack { Accounts = accounts };
        try
        {
            await stack.StartCoreAsync(limits ?? new LimitsOptions());
            return stack;
        }
        catch
        {
            await stack.DisposeAsync();
            throw;
        }
    }

    private async Task StartCoreAsync(LimitsOptions limits)
    {
        var postfixRoot = Path.Combine(_temp.Path, "postfix");
        var options = new PolicyOptions
        {
            PostfixEndpoint = "unix:" + Path.Combine(_temp.Path, "policy.sock"),
            PostfixSocketGroup = "postfix", // smtpd runs as postfix: the group may connect (mode 0660)
            DovecotEndpoint = "127.0.0.1:0",
            MailLog = Path.Combine(postfixRoot, "maillog"),
        };
        Book = new LimitBook(limits, TimeProvider.System);
        var engine = new PolicyEngine(options, limits, Book, Events, TimeProvider.System);
        Engine = new PolicyHostedService(engine, NullLoggerFactory.Instance);
        await Engine.StartAsync(CancellationToken.None);

        var policy = Engine.PostfixAddress!;
        Postfix = await PostfixRig.CreateAsync(postfixRoot, new PostfixRigOptions
        {
            Domains = [Domain],
            Mailboxes = Mailboxes,
            SubmissionPort = 0,
            MainCf = PostfixSettings(policy),
        });
        Dovecot = await DovecotRig.StartAsync(Path.Combine(_temp.Path, "dovecot"), new DovecotRigOptions
        {
            Passwords = Accounts,
            PostfixAuthSocket = Postfix.SaslSocket,
            ExtraConfig = DovecotSettings(Engine.DovecotUrl!),
        });
    }

    /// <summary>The documented recommended placement (docs/operations.md), with the rig's loopback clients outside mynetworks.</summary>
    public static string[] PostfixSettings(string policy) =>
    [
        "mynetworks=127.255.255.254/32",
        "default_transport=discard",
        "smtpd_relay_restrictions=permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
        .. PolicySnippets.RecommendedMainCf(policy),
    ];

    /// <summary>The documented Dovecot settings; the failure delay is off so that tests of fifty failed logins take seconds.</summary>
    public static string[] DovecotSettings(string url) => [.. PolicySnippets.DovecotConf(url, Nonce), "auth_failure_delay = 0"];

    public async ValueTask DisposeAsync()
    {
        if (Dovecot is not null)
        {
            await Dovecot.DisposeAsync();
        }

        if (Postfix is not null)
        {
            await Postfix.DisposeAsync();
        }

        if (Engine is not null)
        {
            await Engine.DisposeAsync();
        }

        _temp.Dispose();
    }
}

/// <summary>A bot's SMTP client: a raw connection from a chosen 127.0.0.0/8 address, reply code and text back.</summary>
internal sealed class Smtp : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly StreamReader _reader;

    private Smtp(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
        _reader = new StreamReader(_stream, Encoding.ASCII);
    }

    public string LastReply { get; private set; } = "";

    public bool Closed { get; private set; }

    public static async Task<Smtp> ConnectAsync(string source, IPEndPoint server)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true, ReceiveTimeout = 30_000 };
        socket.Bind(new IPEndPoint(IPAddress.Parse(source), 0));
        await socket.ConnectAsync(server);
        var smtp = new Smtp(socket);
        var greeting = await smtp.ReadAsync();
        Assert.Equal(220, greeting);
        Assert.Equal(250, await smtp.SendAsync("EHLO client.example"));
        return smtp;
    }

    public async Task<int> SendAsync(string line)
    {
        if (Closed)
        {
            return 0;
        }

        try
        {
            await _stream.WriteAsync(Encoding.UTF8.GetBytes(line + "\r\n"));
            return await ReadAsync();
        }
        catch (IOException)
        {
            Closed = true;
            return 0;
        }
    }

    public Task<int> AuthAsync(string user, string password) =>
        SendAsync("AUTH PLAIN " + Convert.ToBase64String(Encoding.UTF8.GetBytes("\0" + user + "\0" + password)));

    /// <summary>MAIL, RCPT for each recipient, DATA when one was accepted; the codes of the RCPTs and of the end of DATA (0 when not sent).</summary>
    public async Task<(List<int> Rcpt, int Data)> MailAsync(string from, params string[] to)
    {
        var codes = new List<int>();
        if (await SendAsync($"MAIL FROM:<{from}>") != 250)
        {
            return (codes, 0);
        }

        foreach (var rcpt in to)
        {
            codes.Add(await SendAsync($"RCPT TO:<{rcpt}>"));
        }

        if (!codes.Contains(250))
        {
            await SendAsync("RSET");
            return (codes, 0);
        }

        if (await SendAsync("DATA") != 354)
        {
            return (codes, 0);
        }

        return (codes, await SendAsync($"From: <{from}>\r\nSubject: test\r\n\r\nhello\r\n."));
    }

    private async Task<int> ReadAsync()
    {
        while (true)
        {
            var line = await _reader.ReadLineAsync();
            if (line is null)
            {
                Closed = true;
                return 0;
            }

            if (line.Length < 4 || line[3] != '-')
            {
                LastReply = line;
                var code = int.TryParse(line.AsSpan(0, Math.Min(3, line.Length)), NumberStyles.None, CultureInfo.InvariantCulture, out var c) ? c : 0;
                Closed |= code is 421 or 221;
                return code;
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!Closed)
        {
            try
            {
                await SendAsync("QUIT");
            }
            catch (SocketException)
            {
            }
        }

        _reader.Dispose();
        await _stream.DisposeAsync();
        _socket.Dispose();
    }
}
