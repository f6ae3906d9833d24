import java.net.InetAddress;
import java.net.ServerSocket;
import java.util.Collection;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.common.Node;

/**
 * Helpers for broker.sh, run with the Kafka jars on the classpath.
 *
 * <pre>
 *   free-port                            print a free TCP port on 127.0.0.1
 *   await BOOTSTRAP PID TIMEOUT_SECONDS  wait until a client can bootstrap and sees one broker;
 *                                        exit 0 when ready, 1 on timeout, 2 when PID died first
 *   probe BOOTSTRAP                      exit 0 when a client sees a broker now, else 1
 * </pre>
 */
public final class BrokerTool {
    private BrokerTool() {}

    public static void main(String[] args) throws Exception {
        if (args.length == 1 && args[0].equals("free-port")) {
            try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getByName("127.0.0.1"))) {
                System.out.println(s.getLocalPort());
            }
            return;
        }
        if (args.length == 4 && args[0].equals("await")) {
            System.exit(await(args[1], Long.parseLong(args[2]), Long.parseLong(args[3])));
        }
        if (args.length == 2 && args[0].equals("probe")) {
            System.exit(brokers(args[1], 3000) > 0 ? 0 : 1);
        }
        System.err.println("usage: BrokerTool free-port | await BOOTSTRAP PID TIMEOUT_SECONDS | probe BOOTSTRAP");
        System.exit(64);
    }

    private static int await(String bootstrap, long pid, long timeoutSeconds) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutSeconds);
        while (System.nanoTime() < deadline) {
            // A broker that died (bad config, port taken) will never answer: fail fast.
            if (!ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false)) {
                return 2;
            }
            if (brokers(bootstrap, 2000) >= 1) {
                return 0;
            }
            Thread.sleep(200);
        }
        return 1;
    }

    /** The number of brokers a fresh client sees through bootstrap, or 0 when it sees none in time. */
    private static int brokers(String bootstrap, int timeoutMs) {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.CLIENT_ID_CONFIG, "siaga-broker-tool");
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, timeoutMs);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, timeoutMs);
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MS_CONFIG, 100);
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, 200);
        try (Admin admin = Admin.create(props)) {
            Collection<Node> nodes = admin.describeCluster(new DescribeClusterOptions().timeoutMs(timeoutMs))
                .nodes()
                .get(timeoutMs + 500L, TimeUnit.MILLISECONDS);
            return nodes.size();
        } catch (Exception e) {
            return 0;
        }
    }
}
