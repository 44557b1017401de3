name = "x"
region = "eu-west-1"
zones = ["eu-west-1a"
