using System.Net;
using MailKit;
using MailKit.Net.Smtp;
using MailKit.Security;
using MimeKit;

namespace Analytics.Simulation.Attacks;

/// <summary>
/// The people who must not notice the attack: staff sending ordinary mail through submission with
/// MailKit (STARTTLS, AUTH, one message to a colleague and an outside address every couple of
/// seconds, one of them mistyping the password once), and inbound relays delivering to real local
/// mailboxes on MX. Each from its own loopback address; every reply is recorded, and so is every
/// failure on the client's side (<see cref="ClientLog.ClientFailure"/>): they are reported, not fatal.
/// </summary>
public static class LegitPopulation
{
    public static Task RunAsync(AttackContext context, CancellationToken cancellationToken)
    {
        var world = context.World;
        var tasks = new List<Task>();
        for (var i = 0; i < world.LegitUsers.Count; i++)
        {
            tasks.Add(UserLoopAsync(context, i, cancellationToken));
        }

        for (var i = 0; i < world.LegitRelayIps.Count; i++)
        {
            tasks.Add(RelayLoopAsync(context, i, cancellationToken));
        }

        return Task.WhenAll(tasks);
    }

    private static async Task UserLoopAsync(AttackContext context, int index, CancellationToken cancellationToken)
    {
        var world = context.World;
        var user = world.LegitUsers[index];
        var ip = world.LegitUserIps[index];
        var colleague = world.LegitUsers[(index + 1) % world.LegitUsers.Count];
        var typo = index == 0;
        for (var round = 0; !cancellationToken.IsCancellationRequested; round++)
        {
            await SessionAsync(context, ip, context.Submission, SecureSocketOptions.StartTls, async client =>
            {
                if (typo)
                {
                    typo = false;
                    try
                    {
                        await client.AuthenticateAsync(user, ScenarioWorld.LegitPassword + "x", cancellationToken);
                    }
                    catch (AuthenticationException)
                    {
                        context.Log.Add(Side.Legit, ip.ToString(), "auth", user, 535);
                    }
                }

                await client.AuthenticateAsync(user, ScenarioWorld.LegitPassword, cancellationToken);
                context.Log.Add(Side.Legit, ip.ToString(), "auth", user, 235);
                return Message(user, [colleague, $"friend{round % 7}@example.net"]);
            }, cancellationToken);
            await PauseAsync(context, 4000 + (index * 137), cancellationToken); // a busy person: ~14 messages a minute at most
        }
    }

    private static async Task RelayLoopAsync(AttackContext context, int index, CancellationToken cancellationToken)
    {
        var world = context.World;
        var ip = world.LegitRelayIps[index];
        var mailboxes = world.ValidMailboxes.Order(StringComparer.Ordinal).ToList();
        for (var round = 0; !cancellationToken.IsCancellationRequested; round++)
        {
            var to = mailboxes[(round * 7 + index * 31) % mailboxes.Count] + "@" + ScenarioWorld.Domain;
            await SessionAsync(context, ip, context.Mx, SecureSocketOptions.StartTlsWhenAvailable,
                _ => Task.FromResult(Message($"newsletter{index}@partner.example", [to])), cancellationToken);
            await PauseAsync(context, 2000 + (index * 211), cancellationToken);
        }
    }

    private static MimeMessage Message(string from, IEnumerable<string> to)
    {
        var message = new MimeMessage();
        message.From.Add(MailboxAddress.Parse(from));
        message.To.AddRange(to.Select(MailboxAddress.Parse));
        message.Subject = "minutes of today's meeting";
        message.Body = new TextPart("plain") { Text = "Hello,\n\nthe minutes are below. See you tomorrow.\n" };
        return message;
    }

    /// <summary>One session; every failure is recorded with the code the client got (0 when the connection ended).</summary>
    private static async Task SessionAsync(AttackContext context, IPAddress ip, IPEndPoint server, SecureSocketOptions tls,
        Func<SmtpClient, Task<MimeMessage>> prepare, CancellationToken cancellationToken)
    {
        using var client = new SmtpClient
        {
            LocalEndPoint = new IPEndPoint(ip, 0),
            LocalDomain = "workstation.example.test",
            // The scenario server's certificate is self-signed; it only ever listens on loopback.
            ServerCertificateValidationCallback = (_, _, _, errors) => errors == System.Net.Security.SslPolicyErrors.None || IPAddress.IsLoopback(server.Address),
            Timeout = 30_000,
        };
        var step = "connect";
        try
        {
            await client.ConnectAsync(server.Address.ToString(), server.Port, tls, cancellationToken);
            context.Log.Add(Side.Legit, ip.ToString(), "connect", "", 220);
            step = "auth";
            var message = await prepare(client);
            step = "data";
            await client.SendAsync(message, cancellationToken);
            context.Log.Add(Side.Legit, ip.ToString(), "data", message.From.ToString(), 250);
            await client.DisconnectAsync(true, cancellationToken);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
        catch (MailKit.Net.Smtp.SmtpCommandException ex)
        {
            var at = ex.ErrorCode switch
            {
                MailKit.Net.Smtp.SmtpErrorCode.SenderNotAccepted => "mail",
                MailKit.Net.Smtp.SmtpErrorCode.RecipientNotAccepted => "rcpt",
                MailKit.Net.Smtp.SmtpErrorCode.MessageNotAccepted => "data",
                _ => step,
            };
            context.Log.Add(Side.Legit, ip.ToString(), at, ex.Mailbox?.Address ?? "", (int)ex.StatusCode);
        }
        catch (AuthenticationException)
        {
            context.Log.Add(Side.Legit, ip.ToString(), "auth", "", 535);
        }
        catch (Exception ex) when (ex is SmtpProtocolException or IOException or System.Net.Sockets.SocketException or ServiceNotConnectedException)
        {
            context.Log.Add(Side.Legit, ip.ToString(), step, ex.GetType().Name, 0);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            // Anything else (a TLS handshake that failed, a client timeout) is the client's own failure:
            // counted and reported, never the end of the run.
            context.Log.Add(Side.Legit, ip.ToString(), step, ex.GetType().Name, ClientLog.ClientFailure);
        }
    }

    private static async Task PauseAsync(AttackContext context, int milliseconds, CancellationToken cancellationToken)
    {
        try
        {
            await Task.Delay(TimeSpan.FromMilliseconds(milliseconds), context.Time, cancellationToken);
        }
        catch (OperationCanceledException)
        {
        }
    }
}
