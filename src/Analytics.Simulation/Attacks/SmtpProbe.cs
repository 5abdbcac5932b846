using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Analytics.Simulation.Live;

namespace Analytics.Simulation.Attacks;

/// <summary>
/// The attackers' client: a raw SMTP connection from a chosen 127.0.0.0/8 source address that sends
/// exactly what a bot sends and hands back every reply code. Bots in these scenarios AUTH in the
/// clear (the scenario server allows AUTH before STARTTLS), which keeps them fast; the legitimate
/// population goes through MailKit with STARTTLS.
/// </summary>
public sealed class SmtpProbe : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly SmtpReplyReader _replies;

    private SmtpProbe(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
        _replies = new SmtpReplyReader(_stream);
    }

    /// <summary>The greeting's code (0 when the server closed without one).</summary>
    public int Greeting { get; private set; }

    /// <summary>The server closed the connection (421, or end of stream).</summary>
    public bool Closed { get; private set; }

    public static async Task<SmtpProbe> ConnectAsync(IPAddress source, IPEndPoint server, CancellationToken cancellationToken)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            socket.Bind(new IPEndPoint(source, 0));
            await socket.ConnectAsync(server, cancellationToken);
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        var probe = new SmtpProbe(socket);
        probe.Greeting = await probe.ReadReplyAsync(cancellationToken);
        probe.Closed = probe.Greeting is not 220;
        return probe;
    }

    /// <summary>Sends one line, returns the reply code (0 when the connection ended).</summary>
    public async Task<int> CommandAsync(string line, CancellationToken cancellationToken) => (await CommandWithTextAsync(line, cancellationToken)).Code;

    /// <summary>Sends one line, returns the reply (code 0 when the connection ended).</summary>
    public async Task<(int Code, string Text)> CommandWithTextAsync(string line, CancellationToken cancellationToken)
    {
        if (Closed)
        {
            return (0, "");
        }

        try
        {
            await _stream.WriteAsync(Encoding.ASCII.GetBytes(line + "\r\n"), cancellationToken);
            var reply = await _replies.ReadAsync(cancellationToken);
            Closed |= reply.Code is 0 or 421 or 221;
            return reply;
        }
        catch (Exception ex) when (ex is IOException or SocketException)
        {
            Closed = true;
            return (0, "");
        }
    }

    public Task<int> EhloAsync(string name, CancellationToken cancellationToken) => CommandAsync("EHLO " + name, cancellationToken);

    /// <summary>
    /// AUTH PLAIN; the reply code, where a refusal by policy counts as the 454 it is: through Postfix and
    /// Dovecot it reaches the client as <c>535 5.7.8 Error: authentication failed: Temporary authentication
    /// failure, try again later</c> (Postfix's SASL client has no other code for a refused login).
    /// </summary>
    public async Task<int> AuthPlainAsync(string user, string password, CancellationToken cancellationToken)
    {
        var (code, text) = await CommandWithTextAsync("AUTH PLAIN " + Convert.ToBase64String(Encoding.UTF8.GetBytes("\0" + user + "\0" + password)), cancellationToken);
        return code == 535 && text.Contains(RefusedByPolicy, StringComparison.Ordinal) ? 454 : code;
    }

    /// <summary>The engine's text for a refused login (SessionRules), as Dovecot hands it to Postfix.</summary>
    private const string RefusedByPolicy = "Temporary authentication failure";

    /// <summary>DATA with a small body; the final reply's code.</summary>
    public async Task<int> DataAsync(string from, CancellationToken cancellationToken)
    {
        var code = await CommandAsync("DATA", cancellationToken);
        if (code != 354)
        {
            return code;
        }

        var body = string.Create(CultureInfo.InvariantCulture,
            $"From: <{from}>\r\nSubject: offer\r\nMessage-ID: <{Guid.NewGuid():N}@scenario>\r\n\r\nCheap watches, great prices.\r\n.");
        return await CommandAsync(body, cancellationToken);
    }

    public async Task QuitAsync(CancellationToken cancellationToken)
    {
        if (!Closed)
        {
            await CommandAsync("QUIT", cancellationToken);
        }
    }

    private async Task<int> ReadReplyAsync(CancellationToken cancellationToken) => (await _replies.ReadAsync(cancellationToken)).Code;

    public async ValueTask DisposeAsync()
    {
        await _stream.DisposeAsync();
        _socket.Dispose();
    }
}
