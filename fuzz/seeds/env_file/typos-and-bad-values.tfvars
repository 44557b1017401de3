nmae = 1
etcd_count = -3
vpc_cidr = "10.0.0.0/33"
